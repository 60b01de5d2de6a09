# Readings of kernel-relu2 (arXiv 2605.23641, abstract only), measured: max and mean error
# against ReLU and against the Gaussian-smoothed ReLU on [-R, R], and RMS error under N(0, 1)
# (the distribution after batch norm). R = 4. "current" reproduces `hecnn activations`.
# Run: python3 docs/dev/kernel-relu2-readings.py (numpy).
import numpy as np
from math import erf, sqrt, pi
R=4.0
Phi=np.vectorize(lambda t: 0.5*(1+erf(t/sqrt(2))))
def smooth(x,h): return x*Phi(x/h)+h*np.exp(-(x/h)**2/2)/sqrt(2*pi)
x=np.linspace(-R,R,4001); relu=np.maximum(x,0)
w=np.exp(-x**2/2); w/=w.sum()
def report(name,p,h):
    y=np.polyval(p,x); s=smooth(x,h)
    e=np.abs(y-relu); es=np.abs(y-s)
    print(f"{name:34s} vs ReLU max {e.max():.3f} mean {e.mean():.3f} | vs smoothed max {es.max():.3f} mean {es.mean():.3f} | N(0,1)-weighted RMS vs ReLU {sqrt((w*(y-relu)**2).sum()):.3f}  coeffs {np.round(p,4)}")
def cheb_jackson(h,N=3):
    # Chebyshev coefficients of s(R t) on [-1,1], Jackson-damped, degree 2
    M=2000; th=(np.arange(M)+0.5)*pi/M; t=np.cos(th); f=smooth(R*t,h)
    c=[2/M*np.sum(f*np.cos(k*th)) for k in range(N)]; c[0]/=2
    g=[((N-k+1)*np.cos(pi*k/(N+1))+np.sin(pi*k/(N+1))/np.tan(pi/(N+1)))/(N+1) for k in range(N)]
    a=[c[k]*g[k] for k in range(N)]
    # T0=1, T1=t, T2=2t^2-1 with t=x/R
    return np.array([2*a[2]/R**2, a[1]/R, a[0]-a[2]])
def remez(f,deg=2,iters=50):
    # discrete minimax via LP-free Remez on the grid
    n=deg+2; xs=np.cos(np.linspace(pi,0,n))*R
    for _ in range(iters):
        A=np.array([[xi**k for k in range(deg,-1,-1)]+[(-1)**i] for i,xi in enumerate(xs)])
        sol=np.linalg.solve(A,f(xs)); p=sol[:-1]
        err=np.polyval(p,x)-f(x)
        # new reference: extrema of err alternating
        idx=[0]; 
        for i in range(1,len(x)-1):
            if (err[i]-err[i-1])*(err[i+1]-err[i])<=0: idx.append(i)
        idx.append(len(x)-1)
        cand=sorted(idx,key=lambda i:-abs(err[i]))
        # pick n alternating points greedily
        pts=sorted(cand[:max(n,len(cand))])
        # enforce alternation
        alt=[]
        for i in pts:
            if alt and np.sign(err[i])==np.sign(err[alt[-1]]):
                if abs(err[i])>abs(err[alt[-1]]): alt[-1]=i
            else: alt.append(i)
        while len(alt)>n:
            if abs(err[alt[0]])<abs(err[alt[-1]]): alt.pop(0)
            else: alt.pop()
        if len(alt)<n: break
        xs=x[alt]
    return p
def wls(f,h=None):
    V=np.vstack([x**2,x,np.ones_like(x)]).T; W=np.sqrt(w)
    return np.linalg.lstsq(V*W[:,None], f(x)*W, rcond=None)[0]
h=R/4
report("current: Jackson Chebyshev, h=R/4",cheb_jackson(h),h)
report("least squares of ReLU (quad-relu)",np.array([15/(32*R),0.5,3*R/32]),h)
report("minimax of smoothed, h=R/4",remez(lambda t: smooth(t,h)),h)
report("minimax of ReLU",remez(lambda t: np.maximum(t,0)),h)
report("N(0,1)-weighted LS of smoothed h=R/4",wls(lambda t: smooth(t,h)),h)
for hh in [0.25,0.5,1.0,1.5]:
    report(f"N(0,1)-weighted LS of smoothed h={hh}",wls(lambda t: smooth(t,hh)),hh)
report("N(0,1)-weighted LS of ReLU",wls(lambda t: np.maximum(t,0)),h)
