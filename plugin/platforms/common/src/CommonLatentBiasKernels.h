#ifndef COMMON_LATENTBIAS_KERNELS_H_
#define COMMON_LATENTBIAS_KERNELS_H_

#include "LatentBiasKernels.h"
#include "openmm/common/ComputeArray.h"
#include "openmm/common/ComputeContext.h"
#include "openmm/common/ComputeKernel.h"
#include <vector>

namespace LatentBiasPlugin {

/**
 * CalcLatentBiasForceKernel in OpenMM's common compute framework (OpenCL and CUDA from one kernel source,
 * kernels/latentBiasNative.cc): the native model description evaluated on the device.
 *
 * Per evaluation: gatherPositions (posq -> the model's atoms), forwardModel (features, standardisation, dense
 * layers) and a download of z (latent_dim numbers, plus a flag). V(z) and dV/dz are computed on the host in double
 * precision by LatentBiasEvaluator (grid spline, walls, restraints: a handful of numbers), dV/dz is uploaded, and
 * backwardModel + applyForces add -dV/dx to OpenMM's fixed-point force buffer. Positions and forces never leave the
 * device. Arithmetic is in the context's precision (`real`: single for "single"/"mixed", double for "double").
 *
 * A non-finite gradient is detected on the device and reported (OpenMMException) at the next evaluation, when z is
 * downloaded; non-finite z or energies are reported at once.
 *
 * This kernel has only the native path; TorchScript-only models are refused with an exception naming the
 * platforms that run them.
 */
class CommonCalcLatentBiasForceKernel : public CalcLatentBiasForceKernel {
public:
    CommonCalcLatentBiasForceKernel(std::string name, const OpenMM::Platform& platform, OpenMM::ComputeContext& cc)
        : CalcLatentBiasForceKernel(name, platform), cc(cc) {
    }
    void initialize(const OpenMM::System& system, const LatentBiasForce& force, torch::jit::Module& module) override;
    bool supportsNativePath() const override {
        return true;
    }
    void initializeNative(const OpenMM::System& system, const LatentBiasForce& force,
                          const LatentBiasNativeModel& model) override;
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) override;

protected:
    /** Whether initializeNative() has been called (CUDA: otherwise the libtorch path is used). */
    bool nativeInitialized = false;

private:
    void setBoxArgs();
    OpenMM::ComputeContext& cc;
    bool usePeriodic = false;
    int latentDim = 0, blockSize = 0, forceThreads = 0;
    OpenMM::ComputeArray localOf, localPos, blocks, blockR0, indices, treeChild, treeParent, reference, mean, scale;
    OpenMM::ComputeArray layers, parameters, scratch, features, activations, gradA, gradB, zBuffer, dVdzArray;
    OpenMM::ComputeArray slots, atomStart, slotEntries;
    OpenMM::ComputeKernel gatherKernel, forwardKernel, backwardKernel, applyKernel;
    std::vector<double> zHost;     // latent_dim + 1 (the non-finite-gradient flag)
    std::vector<int> modelAtoms;   // system indices of the model's atoms (to name them in errors)
};

} // namespace LatentBiasPlugin

#endif
