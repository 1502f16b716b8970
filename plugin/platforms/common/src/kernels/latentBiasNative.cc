/**
 * LatentBiasForce, native path, in OpenMM's common compute language (compiled for OpenCL and CUDA from this one
 * source by ComputeContext::compileProgram). It is the device version of LatentBiasNativeModel::forward/backward
 * (plugin/openmmapi/src/LatentBiasNativeModel.cpp), with the same flat data layout:
 *
 *   gatherPositions    all atoms (global)       posq (device order) -> positions of the model's atoms (local order)
 *   forwardModel       one work group           features, standardisation, dense layers -> z; then one work item
 *                                               evaluates the bias V(z) (grid Hermite patches + walls + restraints,
 *                                               as LatentBiasEvaluator), adds it to OpenMM's energy buffer and
 *                                               writes dV/dz, z and the energies (zBuffer)
 *   backwardModel      one work group           dense layers backward, features backward -> per-slot gradient vectors
 *   applyForces        all atoms (global)       per local atom: sum of its slots (CSR list), -dV/dx added
 *                                               atomically to the fixed-point force buffer
 *
 * Nothing comes back to the host per step. zBuffer: z[0..d), [d] non-finite force flag, [d+1] grid + wall energy,
 * [d+2] restraint energy, [d+3] non-finite z/energy flag, [d+4] set by the evaluation after the first one with a
 * non-finite force (flags stay set until the host reports and clears them). badAtoms[l] is set for each local atom
 * whose force was non-finite in that first evaluation (the host names these atoms); a non-finite force is never
 * added to OpenMM's fixed-point force buffer.
 *
 * Defines set by the host: LB_NUM_ATOMS, LB_PADDED_NUM_ATOMS, LB_NUM_BLOCKS, LB_NUM_LAYERS, LB_NUM_FEATURES,
 * LB_LATENT_DIM, LB_EPS (Jacobi tolerance for the precision), LB_PERIODIC (only with periodic boundary conditions),
 * LB_GRID_DIMS (0-3), LB_GRID_TOTAL (grid points), LB_NUM_RESTRAINTS, LB_GRID_LOG (only with the OPES transform of
 * the grid: energy prefactor*ln(max(P, 0)/N + epsilon), biasReals = {wall constant, prefactor, epsilon, ln epsilon}, N after the
 * grid scale in restraintParams).
 * Block records (LB_BLOCK_INTS ints each): kind, offset, count, indexStart, numAtoms, treeStart, referenceStart,
 * scratchStart, exponent, slotStart. Layer records (LB_LAYER_INTS ints each): numInputs, numOutputs, weightStart,
 * biasStart, activation, inputStart (offset of the layer's input in `activations`).
 */

#define LB_DISTANCES 0
#define LB_CONTACTS 1
#define LB_DIHEDRALS 2
#define LB_ALIGNED 3
#define LB_BLOCK_INTS 10
#define LB_LAYER_INTS 6

DEVICE real3 lbCross(real3 a, real3 b) {
    return make_real3(a.y*b.z-a.z*b.y, a.z*b.x-a.x*b.z, a.x*b.y-a.y*b.x);
}

DEVICE real lbDot(real3 a, real3 b) {
    return a.x*b.x + a.y*b.y + a.z*b.z;
}

DEVICE real3 lbScale(real3 a, real s) {
    return make_real3(a.x*s, a.y*s, a.z*s);
}

DEVICE real3 lbAdd(real3 a, real3 b) {
    return make_real3(a.x+b.x, a.y+b.y, a.z+b.z);
}

DEVICE real3 lbSub(real3 a, real3 b) {
    return make_real3(a.x-b.x, a.y-b.y, a.z-b.z);
}

/** OpenMM's triclinic minimum image, rounding half to even (as torch.round and the C++ path). */
DEVICE real3 lbMinimumImage(real3 d, real4 boxA, real4 boxB, real4 boxC) {
#ifdef LB_PERIODIC
    real s = rint(d.z/boxC.z);
    d.x -= boxC.x*s; d.y -= boxC.y*s; d.z -= boxC.z*s;
    s = rint(d.y/boxB.y);
    d.x -= boxB.x*s; d.y -= boxB.y*s; d.z -= boxB.z*s;
    s = rint(d.x/boxA.x);
    d.x -= boxA.x*s; d.y -= boxA.y*s; d.z -= boxA.z*s;
#endif
    return d;
}

DEVICE real3 lbLoad3(GLOBAL const real* x, int i) {
    return make_real3(x[3*i], x[3*i+1], x[3*i+2]);
}

DEVICE void lbStore3(GLOBAL real* x, int i, real3 v) {
    x[3*i] = v.x; x[3*i+1] = v.y; x[3*i+2] = v.z;
}

#define LB_SQRT1_2 ((real) 0.70710678118654752440)
#define LB_INV_SQRT_2PI ((real) 0.39894228040143267794)

DEVICE real lbActivate(int kind, real x) {
    if (kind == 1) return tanh(x);
    if (kind == 2) return x/(1+exp(-x));
    if (kind == 3) return (x > 20 ? x : log1p(exp(x)));
    if (kind == 4) return (x > 0 ? x : expm1(x));
    if (kind == 5) return ((real) 0.5)*x*(1+erf(x*LB_SQRT1_2));
    if (kind == 6) return (x > 0 ? x : (real) 0);
    return x;
}

DEVICE real lbActivationDerivative(int kind, real x, real y) {
    if (kind == 1) return 1-y*y;
    if (kind == 2) {
        real s = 1/(1+exp(-x));
        return s*(1+x*(1-s));
    }
    if (kind == 3) {
        if (x > 20) return 1;
        real e = exp(x);
        return e/(e+1);
    }
    if (kind == 4) return (x > 0 ? (real) 1 : exp(x));
    if (kind == 5) return ((real) 0.5)*(1+erf(x*LB_SQRT1_2)) + x*LB_INV_SQRT_2PI*exp(((real) -0.5)*x*x);
    if (kind == 6) return (x > 0 ? (real) 1 : (real) 0);
    return 1;
}

KERNEL void gatherPositions(GLOBAL const real4* RESTRICT posq, GLOBAL const int* RESTRICT atomIndex,
        GLOBAL const int* RESTRICT localOf, GLOBAL real* RESTRICT localPos) {
    for (int i = GLOBAL_ID; i < LB_NUM_ATOMS; i += GLOBAL_SIZE) {
        int l = localOf[atomIndex[i]];
        if (l >= 0) {
            real4 p = posq[i];
            localPos[3*l] = p.x;
            localPos[3*l+1] = p.y;
            localPos[3*l+2] = p.z;
        }
    }
}

/** One-sided Jacobi SVD of a 3x3 matrix (see jacobiSvd3 in LatentBiasNativeModel.cpp). */
DEVICE void lbJacobiSvd3(const real* C, real* V, real* W, real* s) {
    for (int k = 0; k < 9; k++) {
        W[k] = C[k];
        V[k] = (k%4 == 0) ? 1 : 0;
    }
    for (int sweep = 0; sweep < 30; sweep++) {
        bool rotated = false;
        for (int p = 0; p < 2; p++)
            for (int q = p+1; q < 3; q++) {
                real alpha = 0, beta = 0, gamma = 0;
                for (int a = 0; a < 3; a++) {
                    alpha += W[3*a+p]*W[3*a+p];
                    beta += W[3*a+q]*W[3*a+q];
                    gamma += W[3*a+p]*W[3*a+q];
                }
                if (gamma == 0 || fabs(gamma) <= LB_EPS*sqrt(alpha*beta))
                    continue;
                rotated = true;
                real zeta = (beta-alpha)/(2*gamma);
                real t = (zeta >= 0 ? 1 : -1)/(fabs(zeta)+sqrt(1+zeta*zeta));
                real c = 1/sqrt(1+t*t), sn = c*t;
                for (int a = 0; a < 3; a++) {
                    real wp = W[3*a+p], wq = W[3*a+q];
                    W[3*a+p] = c*wp-sn*wq;
                    W[3*a+q] = sn*wp+c*wq;
                    real vp = V[3*a+p], vq = V[3*a+q];
                    V[3*a+p] = c*vp-sn*vq;
                    V[3*a+q] = sn*vp+c*vq;
                }
            }
        if (!rotated)
            break;
    }
    for (int i = 0; i < 3; i++)
        s[i] = sqrt(W[i]*W[i]+W[3+i]*W[3+i]+W[6+i]*W[6+i]);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2-i; j++)
            if (s[j] < s[j+1]) {
                real tmp = s[j]; s[j] = s[j+1]; s[j+1] = tmp;
                for (int a = 0; a < 3; a++) {
                    tmp = W[3*a+j]; W[3*a+j] = W[3*a+j+1]; W[3*a+j+1] = tmp;
                    tmp = V[3*a+j]; V[3*a+j] = V[3*a+j+1]; V[3*a+j+1] = tmp;
                }
            }
}

KERNEL void forwardModel(GLOBAL const real* RESTRICT x, GLOBAL const int* RESTRICT blocks,
        GLOBAL const real* RESTRICT blockR0, GLOBAL const int* RESTRICT indices, GLOBAL const int* RESTRICT treeChild,
        GLOBAL const int* RESTRICT treeParent, GLOBAL const real* RESTRICT reference, GLOBAL const real* RESTRICT mean,
        GLOBAL const real* RESTRICT scale, GLOBAL const int* RESTRICT layers, GLOBAL const real* RESTRICT parameters,
        GLOBAL real* RESTRICT scratch, GLOBAL real* RESTRICT features, GLOBAL real* RESTRICT activations,
        GLOBAL real* RESTRICT zBuffer, real4 boxA, real4 boxB, real4 boxC, GLOBAL const int* RESTRICT dimInts,
        GLOBAL const real* RESTRICT dimRange, GLOBAL const real* RESTRICT points, GLOBAL const real* RESTRICT nodeDerivs,
        GLOBAL const real* RESTRICT biasReals, GLOBAL const int* RESTRICT restraintComponents,
        GLOBAL const real* RESTRICT restraintReals, GLOBAL const real* RESTRICT restraintParams,
        GLOBAL real* RESTRICT dVdz, GLOBAL mixed* RESTRICT energyBuffer) {
    // ---------------------------------------------------------------------------------------------- features
    int alignedCount = 0;
    for (int b = 0; b < LB_NUM_BLOCKS; b++) {
        GLOBAL const int* info = blocks+LB_BLOCK_INTS*b;
        int kind = info[0], offset = info[1], count = info[2];
        GLOBAL const int* idx = indices+info[3];
        GLOBAL real* s = scratch+info[7];
        if (kind == LB_DISTANCES || kind == LB_CONTACTS) {
            real r0 = blockR0[b];
            int exponent = info[8];
            for (int k = LOCAL_ID; k < count; k += LOCAL_SIZE) {
                real3 d = lbSub(lbLoad3(x, idx[2*k+1]), lbLoad3(x, idx[2*k]));
                d = lbMinimumImage(d, boxA, boxB, boxC);
                real r2 = lbDot(d, d);
                GLOBAL real* t = s+5*k;
                t[0] = d.x; t[1] = d.y; t[2] = d.z;
                if (kind == LB_DISTANCES) {
                    t[3] = sqrt(r2);
                    features[offset+k] = t[3];
                }
                else {
                    real x2 = r2/(r0*r0);
                    real value = 1/(1+pow(x2, ((real) 0.5)*exponent));
                    t[3] = x2;
                    t[4] = value;
                    features[offset+k] = value;
                }
            }
        }
        else if (kind == LB_DIHEDRALS) {
            int m = count/2;
            for (int k = LOCAL_ID; k < m; k += LOCAL_SIZE) {
                real3 p0 = lbLoad3(x, idx[4*k]), p1 = lbLoad3(x, idx[4*k+1]);
                real3 p2 = lbLoad3(x, idx[4*k+2]), p3 = lbLoad3(x, idx[4*k+3]);
                real3 b1 = lbMinimumImage(lbSub(p1, p0), boxA, boxB, boxC);
                real3 b2 = lbMinimumImage(lbSub(p2, p1), boxA, boxB, boxC);
                real3 b3 = lbMinimumImage(lbSub(p3, p2), boxA, boxB, boxC);
                real3 n12 = lbCross(b1, b2), n23 = lbCross(b2, b3);
                real y = sqrt(lbDot(b2, b2))*lbDot(b1, n23);
                real xx = lbDot(n12, n23);
                real norm = sqrt(xx*xx+y*y);
                GLOBAL real* t = s+11*k;
                lbStore3(t, 0, b1);
                lbStore3(t, 1, b2);
                lbStore3(t, 2, b3);
                t[9] = xx;
                t[10] = y;
                features[offset+k] = y/norm;
                features[offset+m+k] = xx/norm;
            }
        }
        else {
            // aligned coordinates: one work item per block (the selection is made whole, centred and rotated)
            if (alignedCount++%LOCAL_SIZE != LOCAL_ID)
                continue;
            int n = info[4];
            GLOBAL const real* ref = reference+info[6];
            GLOBAL real* c = s;
            GLOBAL real* rot = s+3*n;
            GLOBAL real* Vg = rot+9;
            GLOBAL real* lambda = Vg+9;
            for (int k = 0; k < n; k++)
                lbStore3(c, k, lbLoad3(x, idx[k]));
#ifdef LB_PERIODIC
            GLOBAL const int* child = treeChild+info[5];
            GLOBAL const int* parent = treeParent+info[5];
            for (int e = 0; e < n-1; e++) {
                int ch = child[e], pa = parent[e];
                real3 bond = lbMinimumImage(lbSub(lbLoad3(x, idx[ch]), lbLoad3(x, idx[pa])), boxA, boxB, boxC);
                lbStore3(c, ch, lbAdd(lbLoad3(c, pa), bond));
            }
#endif
            real3 centre = make_real3(0, 0, 0);
            for (int k = 0; k < n; k++)
                centre = lbAdd(centre, lbLoad3(c, k));
            centre = lbScale(centre, 1/(real) n);
            for (int k = 0; k < n; k++)
                lbStore3(c, k, lbSub(lbLoad3(c, k), centre));
            real C[9], V[9], W[9], sv[3];
            for (int k = 0; k < 9; k++)
                C[k] = 0;
            for (int k = 0; k < n; k++)
                for (int a = 0; a < 3; a++)
                    for (int q = 0; q < 3; q++)
                        C[3*a+q] += c[3*k+a]*ref[3*k+q];
            lbJacobiSvd3(C, V, W, sv);
            real3 u0 = make_real3(W[0]/sv[0], W[3]/sv[0], W[6]/sv[0]);
            real3 u1 = make_real3(W[1]/sv[1], W[4]/sv[1], W[7]/sv[1]);
            real3 u2 = lbCross(u0, u1);
            real detV = V[0]*(V[4]*V[8]-V[5]*V[7]) - V[1]*(V[3]*V[8]-V[5]*V[6]) + V[2]*(V[3]*V[7]-V[4]*V[6]);
            if (detV < 0)
                u2 = lbScale(u2, -1);
            lambda[0] = sv[0];
            lambda[1] = sv[1];
            lambda[2] = u2.x*W[2] + u2.y*W[5] + u2.z*W[8];
            real ua[3][3] = {{u0.x, u0.y, u0.z}, {u1.x, u1.y, u1.z}, {u2.x, u2.y, u2.z}};
            for (int k = 0; k < 9; k++)
                Vg[k] = V[k];
            for (int a = 0; a < 3; a++)
                for (int q = 0; q < 3; q++)
                    rot[3*a+q] = ua[0][a]*V[3*q] + ua[1][a]*V[3*q+1] + ua[2][a]*V[3*q+2];
            for (int k = 0; k < n; k++)
                for (int q = 0; q < 3; q++)
                    features[offset+3*k+q] = c[3*k]*rot[q] + c[3*k+1]*rot[3+q] + c[3*k+2]*rot[6+q];
        }
    }
    SYNC_THREADS;
    // ------------------------------------------------------------------------- standardisation, dense layers
    for (int i = LOCAL_ID; i < LB_NUM_FEATURES; i += LOCAL_SIZE)
        activations[i] = (features[i]-mean[i])/scale[i];
    SYNC_THREADS;
    for (int l = 0; l < LB_NUM_LAYERS; l++) {
        GLOBAL const int* L = layers+LB_LAYER_INTS*l;
        int nIn = L[0], nOut = L[1], activation = L[4];
        GLOBAL const real* W = parameters+L[2];
        GLOBAL const real* bias = parameters+L[3];
        GLOBAL const real* in = activations+L[5];
        GLOBAL real* pre = activations+L[5]+nIn;
        GLOBAL real* post = pre+nOut;
        for (int o = LOCAL_ID; o < nOut; o += LOCAL_SIZE) {
            GLOBAL const real* row = W+o*nIn;
            real sum = 0;
            for (int i = 0; i < nIn; i++)
                sum += row[i]*in[i];
            sum += bias[o];
            pre[o] = sum;
            post[o] = lbActivate(activation, sum);
        }
        SYNC_THREADS;
    }
    // ------------------------------------------------------------------------------------------- bias V(z)
    if (LOCAL_ID == 0) {
        GLOBAL const int* last = layers+LB_LAYER_INTS*(LB_NUM_LAYERS-1);
        GLOBAL const real* z = activations+last[5]+last[0]+last[1];
        real dV[LB_LATENT_DIM];
        bool finite = true;
        for (int i = 0; i < LB_LATENT_DIM; i++) {
            dV[i] = 0;
            finite = finite && isfinite(z[i]);
        }
        real gridEnergy = 0, restraintEnergy = 0;
#if LB_GRID_DIMS > 0
        // scale*table(clamped z) + 0.5*kw*(max(0, z-max)^2 + max(0, min-z)^2) on non-periodic dimensions
        real scale = restraintParams[2*LB_NUM_RESTRAINTS], wallK = biasReals[0], walls = 0;
        bool inside[LB_GRID_DIMS];
        bool outside = false;
        int lower[LB_GRID_DIMS];
        real basis[LB_GRID_DIMS][2][2], dbasis[LB_GRID_DIMS][2][2];
        for (int k = 0; k < LB_GRID_DIMS; k++) {
            int component = dimInts[4*k], n = dimInts[4*k+2];
            GLOBAL const real* xs = points+dimInts[4*k+3];
            real lo = dimRange[2*k], hi = dimRange[2*k+1];
            real v = z[component], t;
            inside[k] = true;
            if (dimInts[4*k+1]) {
                real s = (v-lo)/(hi-lo);
                t = lo+(hi-lo)*(s-floor(s));
            }
            else {
                real above = (v > hi ? v-hi : (real) 0), below = (v < lo ? lo-v : (real) 0);
                walls += above*above+below*below;
                dV[component] += wallK*(above-below);
                t = (v < lo ? lo : (v > hi ? hi : v));
                inside[k] = (v >= lo && v <= hi);
            }
            if (!(t >= lo && t <= hi))
                outside = true;
            t = (t < xs[0] ? xs[0] : (t > xs[n-1] ? xs[n-1] : t));
            int a = 0, b = n-1;
            while (b-a > 1) {
                int middle = (a+b)/2;
                if (xs[middle] > t)
                    b = middle;
                else
                    a = middle;
            }
            lower[k] = a;
            real h = xs[b]-xs[a];
            real s = (t-xs[a])/h, s2 = s*s, s3 = s2*s;
            basis[k][0][0] = 1-3*s2+2*s3;
            basis[k][1][0] = 3*s2-2*s3;
            basis[k][0][1] = h*(s-2*s2+s3);
            basis[k][1][1] = h*(s3-s2);
            dbasis[k][0][0] = (6*s2-6*s)/h;
            dbasis[k][1][0] = (6*s-6*s2)/h;
            dbasis[k][0][1] = 1-4*s+3*s2;
            dbasis[k][1][1] = 3*s2-2*s;
        }
        real value = 0, g[LB_GRID_DIMS];
        for (int k = 0; k < LB_GRID_DIMS; k++)
            g[k] = 0;
        if (!outside) {
            int stride[3] = {1, dimInts[2], (LB_GRID_DIMS > 1 ? dimInts[2]*dimInts[6] : 0)};
            for (int corner = 0; corner < (1 << LB_GRID_DIMS); corner++) {
                int node = 0;
                for (int k = 0; k < LB_GRID_DIMS; k++)
                    node += (lower[k]+((corner >> k) & 1))*stride[k];
                real nodeValues[1 << LB_GRID_DIMS];
                for (int mask = 0; mask < (1 << LB_GRID_DIMS); mask++)
                    nodeValues[mask] = nodeDerivs[mask*LB_GRID_TOTAL+node];
#ifdef LB_GRID_LOG_NODES
                {
                    // OPES on a Hermite table of S: V = prefactor*ln(max(S, 0)/N + epsilon) and its derivatives at the
                    // node by the chain rule (LatentBiasGrid::logNodeDerivatives), then V's Hermite patch
                    real norm = restraintParams[2*LB_NUM_RESTRAINTS+1], prefactor = biasReals[1], epsilon = biasReals[2];
                    real p = (nodeValues[0] > 0 ? nodeValues[0] : (real) 0);
                    real D = p+epsilon*norm;
                    if (D > 0) {
                        real inv = 1/D, inv2 = inv*inv;
                        real v[1 << LB_GRID_DIMS];
                        v[0] = prefactor*log(p/norm+epsilon);
                        for (int mask = 1; mask < (1 << LB_GRID_DIMS); mask++) {
                            int bits = (mask & 1)+((mask >> 1) & 1)+((mask >> 2) & 1);
                            real dv;
                            if (bits == 1)
                                dv = nodeValues[mask]*inv;
                            else if (bits == 2) {
                                int a = mask & (-mask), b = mask ^ a;
                                dv = nodeValues[mask]*inv-nodeValues[a]*nodeValues[b]*inv2;
                            }
#if LB_GRID_DIMS == 3
                            else
                                dv = nodeValues[7]*inv-(nodeValues[3]*nodeValues[4]+nodeValues[5]*nodeValues[2]
                                     +nodeValues[6]*nodeValues[1])*inv2+2*nodeValues[1]*nodeValues[2]*nodeValues[4]*inv2*inv;
#else
                            else
                                dv = 0;
#endif
                            v[mask] = prefactor*dv;
                        }
                        for (int mask = 0; mask < (1 << LB_GRID_DIMS); mask++)
                            nodeValues[mask] = v[mask];
                    }
                    else {
                        // epsilon*N underflowed (single precision): the flat value prefactor*ln(epsilon)
                        nodeValues[0] = prefactor*biasReals[3];
                        for (int mask = 1; mask < (1 << LB_GRID_DIMS); mask++)
                            nodeValues[mask] = 0;
                    }
                }
#endif
                for (int mask = 0; mask < (1 << LB_GRID_DIMS); mask++) {
                    real f = nodeValues[mask];
                    real prod = f;
                    for (int k = 0; k < LB_GRID_DIMS; k++)
                        prod *= basis[k][(corner >> k) & 1][(mask >> k) & 1];
                    value += prod;
                    for (int j = 0; j < LB_GRID_DIMS; j++) {
                        real p = f*dbasis[j][(corner >> j) & 1][(mask >> j) & 1];
                        for (int k = 0; k < LB_GRID_DIMS; k++)
                            if (k != j)
                                p *= basis[k][(corner >> k) & 1][(mask >> k) & 1];
                        g[j] += p;
                    }
                }
            }
        }
#ifdef LB_GRID_LOG_NODES
        if (outside)
            value = biasReals[1]*biasReals[3];   // S = 0 there: prefactor*ln(epsilon)
#endif
#ifdef LB_GRID_LOG
        {
            // OPES: prefactor*ln(max(P, 0)/N + epsilon); derivative prefactor*P'/(P + epsilon*N) where P > 0
            real norm = restraintParams[2*LB_NUM_RESTRAINTS+1], prefactor = biasReals[1], epsilon = biasReals[2];
            real p = (value > 0 ? value : (real) 0);
            real arg = p/norm+epsilon;
            // epsilon may underflow in single precision: where P/N + epsilon is 0 the energy is prefactor*ln(epsilon)
            real chain = (value > 0 && arg > 0 ? prefactor/(norm*arg) : (real) 0);
            value = (arg > 0 ? prefactor*log(arg) : prefactor*biasReals[3]);
            for (int k = 0; k < LB_GRID_DIMS; k++)
                g[k] *= chain;
        }
#endif
        gridEnergy = scale*value+((real) 0.5)*wallK*walls;
        for (int k = 0; k < LB_GRID_DIMS; k++)
            if (inside[k])
                dV[dimInts[4*k]] += scale*g[k];
#endif
        for (int i = 0; i < LB_NUM_RESTRAINTS; i++) {
            int component = restraintComponents[i];
            real v = z[component];
            real center = restraintParams[2*i], k = restraintParams[2*i+1];
            real period = restraintReals[4*i], lowerWall = restraintReals[4*i+1], upperWall = restraintReals[4*i+2];
            real wallK = restraintReals[4*i+3];
            real dev = v-center;
            if (period > 0)
                dev -= period*rint(dev/period);
            real above = (v > upperWall ? v-upperWall : (real) 0), below = (v < lowerWall ? lowerWall-v : (real) 0);
            restraintEnergy += ((real) 0.5)*k*dev*dev+((real) 0.5)*wallK*(above*above+below*below);
            dV[component] += k*dev+wallK*(above-below);
        }
        for (int i = 0; i < LB_LATENT_DIM; i++) {
            zBuffer[i] = z[i];
            dVdz[i] = dV[i];
        }
        if (zBuffer[LB_LATENT_DIM] != 0)
            zBuffer[LB_LATENT_DIM+4] = 1;  // badAtoms holds the first evaluation with a non-finite force
        zBuffer[LB_LATENT_DIM+1] = gridEnergy;
        zBuffer[LB_LATENT_DIM+2] = restraintEnergy;
        if (!finite || !isfinite(gridEnergy+restraintEnergy))
            zBuffer[LB_LATENT_DIM+3] = 1;
        energyBuffer[0] += gridEnergy+restraintEnergy;
    }
}

KERNEL void backwardModel(GLOBAL const int* RESTRICT blocks, GLOBAL const real* RESTRICT blockR0,
        GLOBAL const int* RESTRICT indices, GLOBAL const real* RESTRICT reference, GLOBAL const real* RESTRICT scale,
        GLOBAL const int* RESTRICT layers, GLOBAL const real* RESTRICT parameters, GLOBAL const real* RESTRICT scratch,
        GLOBAL const real* RESTRICT activations, GLOBAL real* RESTRICT gradA, GLOBAL real* RESTRICT gradB,
        GLOBAL const real* RESTRICT dVdz, GLOBAL real* RESTRICT slots, GLOBAL real* RESTRICT zBuffer) {
    GLOBAL real* g = gradA;
    GLOBAL real* gNext = gradB;
    for (int i = LOCAL_ID; i < LB_LATENT_DIM; i += LOCAL_SIZE)
        g[i] = dVdz[i];
    SYNC_THREADS;
    for (int l = LB_NUM_LAYERS-1; l >= 0; l--) {
        GLOBAL const int* L = layers+LB_LAYER_INTS*l;
        int nIn = L[0], nOut = L[1], activation = L[4];
        GLOBAL const real* W = parameters+L[2];
        GLOBAL const real* pre = activations+L[5]+nIn;
        GLOBAL const real* post = pre+nOut;
        for (int o = LOCAL_ID; o < nOut; o += LOCAL_SIZE)
            g[o] *= lbActivationDerivative(activation, pre[o], post[o]);
        SYNC_THREADS;
        for (int i = LOCAL_ID; i < nIn; i += LOCAL_SIZE) {
            real sum = 0;
            for (int o = 0; o < nOut; o++)
                sum += W[o*nIn+i]*g[o];
            gNext[i] = sum;
        }
        SYNC_THREADS;
        GLOBAL real* tmp = g;
        g = gNext;
        gNext = tmp;
    }
    // g now holds dV/d(standardised features): gf = g/scale, used directly below.
    int alignedCount = 0;
    for (int b = 0; b < LB_NUM_BLOCKS; b++) {
        GLOBAL const int* info = blocks+LB_BLOCK_INTS*b;
        int kind = info[0], offset = info[1], count = info[2], slotStart = info[9];
        GLOBAL const real* s = scratch+info[7];
        if (kind == LB_DISTANCES || kind == LB_CONTACTS) {
            real r0 = blockR0[b];
            int exponent = info[8];
            for (int k = LOCAL_ID; k < count; k += LOCAL_SIZE) {
                GLOBAL const real* t = s+5*k;
                real gf = g[offset+k]/scale[offset+k];
                real factor;
                if (kind == LB_DISTANCES)
                    factor = gf/t[3];
                else {
                    real p = ((real) 0.5)*exponent, value = t[4];
                    real dsdx2 = -value*value*p*pow(t[3], p-1);
                    factor = gf*dsdx2*2/(r0*r0);
                }
                lbStore3(slots, slotStart+k, make_real3(factor*t[0], factor*t[1], factor*t[2]));
            }
        }
        else if (kind == LB_DIHEDRALS) {
            int m = count/2;
            for (int k = LOCAL_ID; k < m; k += LOCAL_SIZE) {
                GLOBAL const real* t = s+11*k;
                real3 b1 = lbLoad3(t, 0), b2 = lbLoad3(t, 1), b3 = lbLoad3(t, 2);
                real xx = t[9], y = t[10];
                real gs = g[offset+k]/scale[offset+k], gc = g[offset+m+k]/scale[offset+m+k];
                real n2 = xx*xx+y*y, n3 = n2*sqrt(n2);
                real gy = (gs*xx*xx-gc*xx*y)/n3;
                real gX = (gc*y*y-gs*xx*y)/n3;
                real3 n12 = lbCross(b1, b2), n23 = lbCross(b2, b3), b3xb1 = lbCross(b3, b1);
                real Lb = sqrt(lbDot(b2, b2));
                real T = lbDot(b1, n23);
                real3 gb1 = lbAdd(lbScale(n23, gy*Lb), lbScale(lbCross(b2, n23), gX));
                real3 gb2 = lbAdd(lbAdd(lbScale(b2, gy*T/Lb), lbScale(b3xb1, gy*Lb)),
                                  lbScale(lbAdd(lbCross(n23, b1), lbCross(b3, n12)), gX));
                real3 gb3 = lbAdd(lbScale(n12, gy*Lb), lbScale(lbCross(n12, b2), gX));
                lbStore3(slots, slotStart+3*k, gb1);
                lbStore3(slots, slotStart+3*k+1, gb2);
                lbStore3(slots, slotStart+3*k+2, gb3);
            }
        }
        else {
            if (alignedCount++%LOCAL_SIZE != LOCAL_ID)
                continue;
            int n = info[4];
            GLOBAL const real* ref = reference+info[6];
            GLOBAL const real* c = s;
            GLOBAL const real* rotg = s+3*n;
            GLOBAL const real* Vg = rotg+9;
            GLOBAL const real* lambda = Vg+9;
            real rot[9], V[9];
            for (int k = 0; k < 9; k++) {
                rot[k] = rotg[k];
                V[k] = Vg[k];
            }
            // G_rot = c^T G_out (G_out = dV/d(aligned coordinates))
            real Grot[9];
            for (int k = 0; k < 9; k++)
                Grot[k] = 0;
            for (int k = 0; k < n; k++)
                for (int a = 0; a < 3; a++)
                    for (int q = 0; q < 3; q++)
                        Grot[3*a+q] += c[3*k+a]*g[offset+3*k+q]/scale[offset+3*k+q];
            real M[9], Mp[9], K[9], tmp[9], B[9], GC[9];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++)
                    M[3*i+j] = rot[i]*Grot[j] + rot[3+i]*Grot[3+j] + rot[6+i]*Grot[6+j];
            for (int i = 0; i < 3; i++)
                for (int q = 0; q < 3; q++)
                    tmp[3*i+q] = M[3*i]*V[q] + M[3*i+1]*V[3+q] + M[3*i+2]*V[6+q];
            for (int p = 0; p < 3; p++)
                for (int q = 0; q < 3; q++)
                    Mp[3*p+q] = V[p]*tmp[q] + V[3+p]*tmp[3+q] + V[6+p]*tmp[6+q];
            for (int p = 0; p < 3; p++)
                for (int q = 0; q < 3; q++)
                    K[3*p+q] = (p == q ? (real) 0 : Mp[3*p+q]/(lambda[p]+lambda[q]));
            for (int i = 0; i < 3; i++)
                for (int q = 0; q < 3; q++)
                    tmp[3*i+q] = V[3*i]*K[q] + V[3*i+1]*K[3+q] + V[3*i+2]*K[6+q];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++)
                    B[3*i+j] = tmp[3*i]*V[3*j] + tmp[3*i+1]*V[3*j+1] + tmp[3*i+2]*V[3*j+2];
            for (int a = 0; a < 3; a++)
                for (int j = 0; j < 3; j++) {
                    real sum = 0;
                    for (int i = 0; i < 3; i++)
                        sum += rot[3*a+i]*(B[3*i+j]-B[3*j+i]);
                    GC[3*a+j] = sum;
                }
            // G_c = G_out rot^T + ref GC^T, minus its mean (centring). Making the selection whole moves each atom
            // by a lattice vector that is constant between image changes, so G_c is dV/dx of each selected atom.
            real3 gmean = make_real3(0, 0, 0);
            for (int pass = 0; pass < 2; pass++)
                for (int k = 0; k < n; k++) {
                    real go0 = g[offset+3*k]/scale[offset+3*k];
                    real go1 = g[offset+3*k+1]/scale[offset+3*k+1];
                    real go2 = g[offset+3*k+2]/scale[offset+3*k+2];
                    real v[3];
                    for (int a = 0; a < 3; a++)
                        v[a] = go0*rot[3*a] + go1*rot[3*a+1] + go2*rot[3*a+2]
                             + ref[3*k]*GC[3*a] + ref[3*k+1]*GC[3*a+1] + ref[3*k+2]*GC[3*a+2];
                    if (pass == 0)
                        gmean = lbAdd(gmean, make_real3(v[0], v[1], v[2]));
                    else
                        lbStore3(slots, slotStart+k, lbSub(make_real3(v[0], v[1], v[2]), lbScale(gmean, 1/(real) n)));
                }
        }
    }
}

/**
 * slotEntries[atomStart[l]..atomStart[l+1]) lists the slots that contribute to local atom l: entry = 2*slot + 1 for
 * a subtracted slot, 2*slot for an added one.
 */
KERNEL void applyForces(GLOBAL const int* RESTRICT atomIndex, GLOBAL const int* RESTRICT localOf,
        GLOBAL const int* RESTRICT atomStart, GLOBAL const int* RESTRICT slotEntries, GLOBAL const real* RESTRICT slots,
        GLOBAL mm_ulong* RESTRICT forceBuffers, GLOBAL real* RESTRICT zBuffer, GLOBAL int* RESTRICT badAtoms) {
    for (int i = GLOBAL_ID; i < LB_NUM_ATOMS; i += GLOBAL_SIZE) {
        int l = localOf[atomIndex[i]];
        if (l < 0)
            continue;
        real3 grad = make_real3(0, 0, 0);
        for (int e = atomStart[l]; e < atomStart[l+1]; e++) {
            int entry = slotEntries[e];
            real3 v = lbLoad3(slots, entry >> 1);
            grad = ((entry & 1) ? lbSub(grad, v) : lbAdd(grad, v));
        }
        if (!(isfinite(grad.x) && isfinite(grad.y) && isfinite(grad.z))) {
            // reported by the host (with this atom) at the next check; never converted to fixed point
            zBuffer[LB_LATENT_DIM] = 1;
            if (zBuffer[LB_LATENT_DIM+4] == 0)
                badAtoms[l] = 1;
            continue;
        }
        // Atomic: with PME, OpenMM's reciprocal-space forces are added to the same buffer from another stream
        // (CUDA) or queue (OpenCL) while this kernel runs (its own kernels use ATOMIC_ADD for this reason).
        ATOMIC_ADD(&forceBuffers[i], (mm_ulong) realToFixedPoint(-grad.x));
        ATOMIC_ADD(&forceBuffers[i+LB_PADDED_NUM_ATOMS], (mm_ulong) realToFixedPoint(-grad.y));
        ATOMIC_ADD(&forceBuffers[i+2*LB_PADDED_NUM_ATOMS], (mm_ulong) realToFixedPoint(-grad.z));
    }
}
