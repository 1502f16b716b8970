#ifndef LATENTBIAS_FORCE_IMPL_H_
#define LATENTBIAS_FORCE_IMPL_H_

#include "LatentBiasForce.h"
#include "internal/windowsExportLatentBias.h"
#include "openmm/Kernel.h"
#include "openmm/internal/ForceImpl.h"
#include <map>
#include <string>
#include <vector>

namespace LatentBiasPlugin {

/** The internal implementation of LatentBiasForce (one per Context). */
class OPENMM_EXPORT_LATENTBIAS LatentBiasForceImpl : public OpenMM::ForceImpl {
public:
    LatentBiasForceImpl(const LatentBiasForce& owner);
    ~LatentBiasForceImpl();
    void initialize(OpenMM::ContextImpl& context);
    const LatentBiasForce& getOwner() const {
        return owner;
    }
    void updateContextState(OpenMM::ContextImpl& context) {
        // This force never modifies the state.
    }
    double calcForcesAndEnergy(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy, int groups);
    std::map<std::string, double> getDefaultParameters();
    std::vector<std::string> getKernelNames();
    void updateParametersInContext(OpenMM::ContextImpl& context);
    std::vector<double> getLastLatentValues() const;
    std::vector<double> getLastEnergies() const;
    bool isLastEvaluationCurrent(OpenMM::ContextImpl& context);
    /** "native" or "torch": how the kernel evaluates the model in this Context. */
    const std::string& getEvaluationPath() const {
        return evaluationPath;
    }

private:
    const LatentBiasForce& owner;
    OpenMM::Kernel kernel;
    std::string evaluationPath;
};

} // namespace LatentBiasPlugin

#endif
