#ifndef REFERENCE_LATENTBIAS_KERNELS_H_
#define REFERENCE_LATENTBIAS_KERNELS_H_

#include "LatentBiasKernels.h"
#include "openmm/Platform.h"
#include "openmm/Vec3.h"
#include <vector>

namespace LatentBiasPlugin {

/**
 * Reference implementation of CalcLatentBiasForceKernel. It is registered for every platform derived from
 * ReferencePlatform, which includes the CPU platform (its PlatformData keeps double-precision positions and force
 * buffers in the ReferencePlatform layout).
 */
class ReferenceCalcLatentBiasForceKernel : public CalcLatentBiasForceKernel {
public:
    ReferenceCalcLatentBiasForceKernel(std::string name, const OpenMM::Platform& platform)
        : CalcLatentBiasForceKernel(name, platform), usePeriodic(false), checkedDifferentiable(false), lastVersion(-1) {
    }
    void initialize(const OpenMM::System& system, const LatentBiasForce& force, torch::jit::Module& module) override;
    bool supportsNativePath() const override {
        return true;
    }
    void initializeNative(const OpenMM::System& system, const LatentBiasForce& force,
                          const LatentBiasNativeModel& model) override;
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) override;
    bool isLastEvaluationCurrent(OpenMM::ContextImpl& context) override;

private:
    double executeTorch(OpenMM::ContextImpl& context, bool includeForces);
    double executeNative(OpenMM::ContextImpl& context, bool includeForces);
    void recordEvaluation(OpenMM::ContextImpl& context, double gridEnergy, double restraintEnergy);
    torch::jit::Module module;
    bool native = false;
    bool limitTorchThreads = false;  // CPU platform: libtorch runs single-threaded (OpenMM's threads use the cores)
    LatentBiasNativeModel nativeModel;
    LatentBiasNativeModel::Workspace workspace;
    std::vector<double> fullGradient;  // only to name atoms when a native gradient is not finite
    bool usePeriodic;
    bool checkedDifferentiable;  // the biased components reach the positions (checked at the first force call)
    std::vector<OpenMM::Vec3> lastPositions;
    OpenMM::Vec3 lastBox[3];
    std::vector<double> lastParams;
    long long lastVersion;
};

} // namespace LatentBiasPlugin

#endif
