# Float screen of architectures for a budget of table reads (ReLU, batch norm, pooling
# before the activation): how the built-in budget-100 and budget-500 were chosen.
# Not run by CI. PyTorch on one CPU thread, MNIST from ../shared/datasets (or MNIST_DIR):
#   python -m venv venv && venv/bin/pip install torch numpy
#   E=6 venv/bin/python screen.py              # every candidate, 6 epochs
#   E=12 venv/bin/python screen.py NAME ...    # some, 12 epochs
# Prints, per candidate, its table reads per image and its float test accuracy.
import gzip, sys, time, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(1); torch.manual_seed(1)
D=__import__('os').environ.get('MNIST_DIR', '/work/shared/datasets/mnist') + '/'
def imgs(f):
    b=gzip.open(D+f).read(); return np.frombuffer(b,np.uint8,offset=16).reshape(-1,1,28,28).astype(np.float32)/255
def labs(f): return np.frombuffer(gzip.open(D+f).read(),np.uint8,offset=8).astype(np.int64)
X=torch.tensor((imgs('train-images-idx3-ubyte.gz')-0.1307)/0.3081); Y=torch.tensor(labs('train-labels-idx1-ubyte.gz'))
Xt=torch.tensor((imgs('t10k-images-idx3-ubyte.gz')-0.1307)/0.3081); Yt=torch.tensor(labs('t10k-labels-idx1-ubyte.gz'))
X,Y=X[:55000],Y[:55000]
def C(i,o,k,s=1,p=0): return [nn.Conv2d(i,o,k,s,p), nn.BatchNorm2d(o)]
def act(): return [nn.ReLU()]
def P(k): return [nn.AvgPool2d(k)]
def Dn(i,o,bn=True): return [nn.Linear(i,o)]+([nn.BatchNorm1d(o)] if bn else [])
A={
 'mlp96': [nn.Flatten()]+Dn(784,96)+act()+Dn(96,10,False),
 'c24k5p12': C(1,24,5)+P(12)+act()+[nn.Flatten()]+Dn(96,10,False),
 'c6k7s7': C(1,6,7,7)+act()+[nn.Flatten()]+Dn(96,10,False),
 'c11k12s8': C(1,11,12,8)+act()+[nn.Flatten()]+Dn(99,10,False),
 'c11k5p8': C(1,11,5)+P(8)+act()+[nn.Flatten()]+Dn(99,10,False),
 'c8k10s9+d24': C(1,8,10,9)+act()+[nn.Flatten()]+Dn(72,24)+act()+Dn(24,10,False),
 'c8k12s8+d24': C(1,8,12,8)+act()+[nn.Flatten()]+Dn(72,24)+act()+Dn(24,10,False),
 'mlp64+32': [nn.Flatten()]+Dn(784,64)+act()+Dn(64,32)+act()+Dn(32,10,False),
 # <= 500
 'c10k5p4+c32k3p2': C(1,10,5)+P(4)+act()+C(10,32,3)+P(2)+act()+[nn.Flatten()]+Dn(128,10,False),
 'c8k8s4+c48k3p2': C(1,8,8,4)+act()+C(8,48,3)+P(2)+act()+[nn.Flatten()]+Dn(192,10,False),
 'c6k5p4+c64k3p2': C(1,6,5)+P(4)+act()+C(6,64,3)+P(2)+act()+[nn.Flatten()]+Dn(256,10,False),
 'c8k5p4+c32k3p2+d64': C(1,8,5)+P(4)+act()+C(8,32,3)+P(2)+act()+[nn.Flatten()]+Dn(128,64)+act()+Dn(64,10,False),
 'c8k5pad2p4+c24k4p2': C(1,8,5,1,2)+P(4)+act()+C(8,24,4)+P(2)+act()+[nn.Flatten()]+Dn(96,10,False),
 'c8k8s4+c32k3p2+d64': C(1,8,8,4)+act()+C(8,32,3)+P(2)+act()+[nn.Flatten()]+Dn(128,64)+act()+Dn(64,10,False),
 'c7k8s4+c14k3': C(1,7,8,4)+act()+C(7,14,3)+act()+[nn.Flatten()]+Dn(224,10,False),
 'c13k8s4+d32': C(1,13,8,4)+act()+[nn.Flatten()]+Dn(468,32)+act()+Dn(32,10,False),
 'c8k8s4+c12k3+d16': C(1,8,8,4)+act()+C(8,12,3)+act()+[nn.Flatten()]+Dn(192,16)+act()+Dn(16,10,False),
 'c3k5s2+c16k5p4': C(1,3,5,2)+act()+C(3,16,5)+P(4)+act()+[nn.Flatten()]+Dn(64,10,False),
 'c12k8s4+c64k3s1p4': C(1,12,8,4)+act()+C(12,64,3)+P(4)+act()+[nn.Flatten()]+Dn(64,10,False),
}
def count(m):
    x=torch.zeros(1,1,28,28); n=0
    for l in m:
        x=l(x) if not isinstance(l,nn.BatchNorm1d) else x
        if isinstance(l,nn.ReLU): n+=x.numel()
    return n
names=sys.argv[1:] or list(A)
for name in names:
    m=nn.Sequential(*A[name]); m.eval(); pbs=count(m)
    opt=torch.optim.AdamW(m.parameters(),3e-3,weight_decay=0); E=int(__import__('os').environ.get('E','6'))
    steps=E*(55000//64); sched=torch.optim.lr_scheduler.OneCycleLR(opt,3e-3,total_steps=steps,pct_start=0.05)
    t=time.time()
    for e in range(E):
        m.train(); perm=torch.randperm(55000)
        for i in range(55000//64):
            idx=perm[i*64:(i+1)*64]; xb=X[idx]
            dx,dy=np.random.randint(-1,2,2); xb=torch.roll(xb,(int(dx),int(dy)),(2,3))
            loss=F.cross_entropy(m(xb),Y[idx]); opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    m.eval()
    with torch.no_grad(): acc=(m(Xt).argmax(1)==Yt).float().mean().item()*100
    print(f'{name:24s} pbs {pbs:4d} test {acc:.2f}% ({time.time()-t:.0f}s)',flush=True)
