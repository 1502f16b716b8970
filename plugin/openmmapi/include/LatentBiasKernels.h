#ifndef LATENTBIAS_KERNELS_H_
#define LATENTBIAS_KERNELS_H_

#include "LatentBiasForce.h"
#include "internal/LatentBiasEvaluator.h"
#include "internal/LatentBiasNativeModel.h"
#include "openmm/KernelImpl.h"
#include "openmm/OpenMMException.h"
#include "openmm/Platform.h"
#include "openmm/System.h"
#include <torch/script.h>
#include <string>
#include <vector>

namespace LatentBiasPlugin {

/**
 * Computes the LatentBiasForce. Platform kernels implement initialize/execute; the bookkeeping shared by all
 * platforms (bias evaluator, last z and energies) lives here.
 */
class OPENMM_EXPORT_LATENTBIAS CalcLatentBiasForceKernel : public OpenMM::KernelImpl {
public:
    static std::string Name() {
        return "CalcLatentBiasForce";
    }
    CalcLatentBiasForceKernel(std::string name, const OpenMM::Platform& platform)
        : OpenMM::KernelImpl(name, platform), hasEvaluated(false), lastGridEnergy(0.0), lastRestraintEnergy(0.0) {
    }
    /**
     * Initialize the kernel.
     *
     * @param system  the System this kernel will be applied to
     * @param force   the LatentBiasForce this kernel will be used for
     * @param module  the loaded TorchScript model (on the CPU; platforms move it where they need it)
     */
    virtual void initialize(const OpenMM::System& system, const LatentBiasForce& force, torch::jit::Module& module) = 0;
    /** Whether this platform's kernel can evaluate a model from its native description (no libtorch). */
    virtual bool supportsNativePath() const {
        return false;
    }
    /**
     * Initialize the kernel for the native path: the model is evaluated from its description (forward and analytic
     * backward in the plugin's own code). Only called when supportsNativePath() is true.
     */
    virtual void initializeNative(const OpenMM::System& system, const LatentBiasForce& force,
                                  const LatentBiasNativeModel& model) {
        throw OpenMM::OpenMMException("LatentBiasForce: this platform has no native kernel");
    }
    /**
     * Execute the kernel: one forward and (with includeForces) one backward pass through the model.
     *
     * @return the potential energy due to the force
     */
    virtual double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) = 0;
    /** Copy changed grid values and constants to the context. */
    virtual void copyParametersToContext(OpenMM::ContextImpl& context, const LatentBiasForce& force) {
        evaluator.updateParameters(force);
    }
    /** Whether the last evaluation used the current positions, box, parameters and grid. */
    virtual bool isLastEvaluationCurrent(OpenMM::ContextImpl& context) {
        return false;
    }
    /** z (all model outputs, float64) of the last evaluation; empty before the first one. */
    virtual std::vector<double> getLastLatentValues() const {
        return lastZ;
    }
    /** {grid + walls, restraints} energies of the last evaluation; empty before the first one. */
    virtual std::vector<double> getLastEnergies() const {
        if (!hasEvaluated)
            return std::vector<double>();
        return {lastGridEnergy, lastRestraintEnergy};
    }

protected:
    LatentBiasEvaluator evaluator;
    bool hasEvaluated;
    std::vector<double> lastZ, dVdz, params;
    double lastGridEnergy, lastRestraintEnergy;
};

} // namespace LatentBiasPlugin

#endif /*LATENTBIAS_KERNELS_H_*/
