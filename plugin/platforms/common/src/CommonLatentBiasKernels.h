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
 * layers, then the bias V(z): grid Hermite patches, walls, restraints, added to OpenMM's energy buffer),
 * backwardModel and applyForces (-dV/dx into OpenMM's fixed-point force buffer). Nothing is copied between host and
 * device per step: restraint centres/force constants and the grid scale (Context parameters) are uploaded when they
 * change, grid values by updateParametersInContext; z and the energies are downloaded only when asked for
 * (getLastLatentValues/getLastEnergies). Arithmetic is in the context's precision (`real`: single for
 * "single"/"mixed", double for "double").
 *
 * Non-finite z, energies or gradients set a flag on the device; it is read (and an OpenMMException thrown) after
 * every evaluation that computes the energy, every CHECK_INTERVAL evaluations, and when z is queried. A non-finite
 * force is never added to OpenMM's force buffer; the device records which atoms had one in the first such
 * evaluation, and the exception names them as the Reference platform does (LatentBiasEvaluator::checkFinite).
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
    void copyParametersToContext(OpenMM::ContextImpl& context, const LatentBiasForce& force) override;
    std::vector<double> getLastLatentValues() const override;
    std::vector<double> getLastEnergies() const override;
    /** Evaluations between two reads of the device's non-finite flags during dynamics. */
    static const int CHECK_INTERVAL = 64;

protected:
    /** Whether initializeNative() has been called (CUDA: otherwise the libtorch path is used). */
    bool nativeInitialized = false;

private:
    void setBoxArgs();
    void uploadBias();
    /** Download zBuffer (z, flags, energies) into zHost; throw (and clear the flags) if a flag is set. */
    void downloadAndCheck() const;
    OpenMM::ComputeContext& cc;
    bool usePeriodic = false;
    int latentDim = 0, blockSize = 0, forceThreads = 0;
    OpenMM::ComputeArray localOf, localPos, blocks, blockR0, indices, treeChild, treeParent, reference, mean, scale;
    OpenMM::ComputeArray layers, parameters, scratch, features, activations, gradA, gradB, zBuffer, dVdzArray;
    OpenMM::ComputeArray slots, atomStart, slotEntries;
    OpenMM::ComputeArray dimInts, dimRange, points, nodeDerivs, biasReals, restraintComponents, restraintReals;
    OpenMM::ComputeArray restraintParams, badAtoms;
    std::vector<double> uploadedParams;
    long long evaluations = 0;
    OpenMM::ComputeKernel gatherKernel, forwardKernel, backwardKernel, applyKernel;
    mutable std::vector<double> zHost;  // z, force flag, grid energy, restraint energy, z/energy flag
    std::string platformName;
    std::vector<int> modelAtoms;   // system indices of the model's atoms (to name them in errors)
    int numParticles = 0;
};

} // namespace LatentBiasPlugin

#endif
