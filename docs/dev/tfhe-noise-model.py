"""Re-implementation of tfhe 1.8.2 core_crypto::commons::noise_formulas (torus-normalised variances)
used to reproduce the log2_p_fail of shortint ClassicPBSParameters (KS-PBS order)."""
import math
from math import log, log2, ceil, erfc, sqrt
import params as P

def min_var_gauss(n, q):   # secure_noise.rs:28
    return 2**(4.0 - 2.88539008177793*log(q)) + 2**(5.31469187675068 - 0.0497829131652661*n)
def min_var_tu(n, q):      # secure_noise.rs:55
    return 2**(4.44 - 2.88539008177793*log(q)) + (1/3)*q**-2*(2**(2*ceil(-0.025167785*n + math.log2(q) + 4.10067100000001)) + 0.5)

def ks_var(n_in, n_out, base_log, level, q_in, q_out, tu):  # lwe_keyswitch.rs:35/81
    B = 2.0**base_log
    keyv = min_var_tu(n_out, q_out) if tu else min_var_gauss(n_out, q_out)
    return (level*n_in*keyv*((1/12)*B**2 + 0.166666666666667)
            + n_in*(0.0208333333333333*q_in**-2 + 0.0416666666666667*B**(-2*level))
            - (1/12)*q_in**-2 + (1/12)*q_out**-2)

def pbs_var(n, k, N, base_log, level, q, tu, mantissa=53.0):  # lwe_programmable_bootstrap.rs:37/107
    B = 2.0**base_log
    lq = log2(q)
    extra = 0.0 if mantissa - lq >= 0 else (lq - mantissa)
    term_fft = 0.00705 * 2**(2.0*extra + 2.88539008177793*log(B) - 2.88539008177793*log(q)) \
               * level**1.01827 * k**1.22003 * N**2.22003 * (k+1.0)**1.01827
    keyv = min_var_tu(k*N, q) if tu else min_var_gauss(k*N, q)
    term_ext = level*N*keyv*((1/12)*B**2 + 0.166666666666667)*(k+1.0)
    return n*(term_fft + term_ext - (1/24)*q**-2
              + 0.5*k*N*(0.0208333333333333*q**-2 + 0.0416666666666667*B**(-2*level))
              + (1/24)*B**(-2*level))

def ms_var_standard(n, q, q2):   # modulus_switch.rs:130
    return n*(0.0208333333333333*q**-2 + 0.0416666666666667*q2**-2) - (1/12)*q**-2 + (1/12)*q2**-2
def ms_var_centered(n, q, q2):   # centered_mean_shifted_modulus_switch.rs:166
    return n*(0.0416666666666667*q**-2 + 0.0208333333333333*q2**-2)

def pfail(var, msg, carry):
    # shortint tests utils/mod.rs:940 expected_pfail_for_precision: threshold = 2^-(log2(msg*carry)+1+1)
    prec_with_padding = int(log2(msg*carry)) + 1
    thr = 2.0**-(prec_with_padding + 1)
    return erfc(thr/sqrt(var)/sqrt(2))

def analyse(name):
    base, _ = P.resolve(name)
    F = P.fields(P.consts[base]['body'])
    g = lambda k: int(F[k].split('(')[1].rstrip(')'))
    n, k, N = g('lwe_dimension'), g('glwe_dimension'), g('polynomial_size')
    pbl, pl, kbl, kl = g('pbs_base_log'), g('pbs_level'), g('ks_base_log'), g('ks_level')
    msg, carry, nu = g('message_modulus'), g('carry_modulus'), int(F['max_noise_level'].split('(')[1].rstrip(')'))
    tu = F['lwe_noise_distribution'][0] == 'new_t_uniform'
    q = 2.0**64
    v_br = pbs_var(n, k, N, pbl, pl, q, tu)
    v_dp = v_br * nu**2
    v_ks = v_dp + ks_var(k*N, n, kbl, kl, q, q, tu)
    centered = 'CenteredMean' in F['modulus_switch_noise_reduction_params']
    v_ms = v_ks + (ms_var_centered if centered else ms_var_standard)(n, q, 2.0*N)
    pf = pfail(v_ms, msg, carry)
    return dict(name=name, v_br=v_br, v_after_dp=v_dp, v_after_ks=v_ks, v_after_ms=v_ms,
                log2_pfail=log2(pf) if pf > 0 else float('-inf'), declared=float(F['log2_p_fail']))

if __name__ == '__main__':
    import sys, re
    rx = sys.argv[1] if len(sys.argv) > 1 else r'V1_8_PARAM_MESSAGE_\d_CARRY_\d_KS_PBS_(GAUSSIAN|TUNIFORM)_2M128'
    for nm in sorted(n for n in P.consts if re.fullmatch(rx, n)):
        r = analyse(nm)
        print('%-55s sigma_br=2^%.2f sigma_ms=2^%.2f log2pfail=%.3f declared=%.3f' % (
            nm, 0.5*log2(r['v_br']), 0.5*log2(r['v_after_ms']), r['log2_pfail'], r['declared']))

def analyse_pbs_ks(name):
    """PBS-KS order (EncryptionKeyChoice::Small): ct under small key; DP applied to (BR+KS) output."""
    base, _ = P.resolve(name)
    F = P.fields(P.consts[base]['body'])
    g = lambda k: int(F[k].split('(')[1].rstrip(')'))
    n, k, N = g('lwe_dimension'), g('glwe_dimension'), g('polynomial_size')
    pbl, pl, kbl, kl = g('pbs_base_log'), g('pbs_level'), g('ks_base_log'), g('ks_level')
    msg, carry = g('message_modulus'), g('carry_modulus')
    nu = int(F['max_noise_level'].split('(')[1].rstrip(')'))
    tu = F['lwe_noise_distribution'][0] == 'new_t_uniform'
    q = 2.0**64
    v = pbs_var(n, k, N, pbl, pl, q, tu) + ks_var(k*N, n, kbl, kl, q, q, tu)
    v = v * nu**2
    centered = 'CenteredMean' in F['modulus_switch_noise_reduction_params']
    v += (ms_var_centered if centered else ms_var_standard)(n, q, 2.0*N)
    return log2(pfail(v, msg, carry)), float(F['log2_p_fail'])
