#include "internal/LatentBiasForceImpl.h"
#include "LatentBiasKernels.h"
#include "internal/LatentBiasModel.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include <sstream>

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

LatentBiasForceImpl::LatentBiasForceImpl(const LatentBiasForce& owner) : owner(owner) {
}

LatentBiasForceImpl::~LatentBiasForceImpl() {
}

void LatentBiasForceImpl::initialize(ContextImpl& context) {
    const System& system = context.getSystem();
    int numAtoms = owner.getModelNumAtoms();
    if (numAtoms >= 0 && numAtoms != system.getNumParticles()) {
        stringstream msg;
        msg << "LatentBiasForce: the model was built for " << numAtoms << " atoms but the System has "
            << system.getNumParticles() << " particles; use the model trained for this system";
        throw OpenMMException(msg.str());
    }
    if (owner.getModelData().empty())
        throw OpenMMException("LatentBiasForce: no model");
    kernel = context.getPlatform().createKernel(CalcLatentBiasForceKernel::Name(), context);
    CalcLatentBiasForceKernel& k = kernel.getAs<CalcLatentBiasForceKernel>();
    string path = owner.getResolvedEvaluationPath();
    if (path == "native" && !k.supportsNativePath()) {
        if (owner.getEvaluationPath() == "native")
            throw OpenMMException("LatentBiasForce: the " + context.getPlatform().getName() + " platform has no native "
                                  "kernel for this force yet; use the Reference or CPU platform, or "
                                  "setEvaluationPath(\"torch\") (libtorch)");
        path = "torch";  // "auto": fall back to the TorchScript code
    }
    if (path == "native") {
        LatentBiasNativeModel native;
        if (!loadNativeModel(owner.getModelData(), native))
            throw OpenMMException("LatentBiasForce: the model has no native description");
        k.initializeNative(system, owner, native);
    }
    else {
        torch::jit::Module module = loadLatentModel(owner.getModelData());
        k.initialize(system, owner, module);
    }
    evaluationPath = path;
}

double LatentBiasForceImpl::calcForcesAndEnergy(ContextImpl& context, bool includeForces, bool includeEnergy, int groups) {
    if ((groups & (1 << owner.getForceGroup())) != 0)
        return kernel.getAs<CalcLatentBiasForceKernel>().execute(context, includeForces, includeEnergy);
    return 0.0;
}

map<string, double> LatentBiasForceImpl::getDefaultParameters() {
    map<string, double> parameters;
    for (int i = 0; i < owner.getNumGlobalParameters(); i++)
        parameters[owner.getGlobalParameterName(i)] = owner.getGlobalParameterDefaultValue(i);
    return parameters;
}

vector<string> LatentBiasForceImpl::getKernelNames() {
    return {CalcLatentBiasForceKernel::Name()};
}

void LatentBiasForceImpl::updateParametersInContext(ContextImpl& context) {
    kernel.getAs<CalcLatentBiasForceKernel>().copyParametersToContext(context, owner);
    context.systemChanged();
}

vector<double> LatentBiasForceImpl::getLastLatentValues() const {
    return kernel.getAs<const CalcLatentBiasForceKernel>().getLastLatentValues();
}

vector<double> LatentBiasForceImpl::getLastEnergies() const {
    return kernel.getAs<const CalcLatentBiasForceKernel>().getLastEnergies();
}

bool LatentBiasForceImpl::isLastEvaluationCurrent(ContextImpl& context) {
    return kernel.getAs<CalcLatentBiasForceKernel>().isLastEvaluationCurrent(context);
}
