#include "ReferenceLatentBiasKernels.h"
#include "internal/LatentBiasModel.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/reference/ReferencePlatform.h"
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <cmath>
#include <sstream>

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

static ReferencePlatform::PlatformData& platformData(ContextImpl& context) {
    return *reinterpret_cast<ReferencePlatform::PlatformData*>(context.getPlatformData());
}

void ReferenceCalcLatentBiasForceKernel::initialize(const System& system, const LatentBiasForce& force,
                                                    torch::jit::Module& module) {
    this->module = module;
    native = false;
    usePeriodic = force.usesPeriodicBoundaryConditions();
    limitTorchThreads = getPlatform().getName() == "CPU";
    evaluator.initialize(force);
}

void ReferenceCalcLatentBiasForceKernel::initializeNative(const System& system, const LatentBiasForce& force,
                                                          const LatentBiasNativeModel& model) {
    native = true;
    nativeModel = model;
    nativeModel.initWorkspace(workspace);
    usePeriodic = force.usesPeriodicBoundaryConditions();
    evaluator.initialize(force);
    if (nativeModel.getNumAtoms() != system.getNumParticles())
        throw OpenMMException("LatentBiasForce: the model's native description is for " +
                              to_string(nativeModel.getNumAtoms()) + " atoms but the System has " +
                              to_string(system.getNumParticles()));
}

namespace {
/** Run libtorch with one intra-op thread for the scope (restoring the caller's setting afterwards). */
class TorchThreadLimit {
public:
    explicit TorchThreadLimit(bool active) : previous(active ? at::get_num_threads() : 1) {
        if (previous != 1)
            at::set_num_threads(1);
    }
    ~TorchThreadLimit() {
        if (previous != 1)
            at::set_num_threads(previous);
    }

private:
    int previous;
};
} // namespace

double ReferenceCalcLatentBiasForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
    if (native)
        return executeNative(context, includeForces);
    TorchThreadLimit limit(limitTorchThreads);
    return executeTorch(context, includeForces);
}

double ReferenceCalcLatentBiasForceKernel::executeNative(ContextImpl& context, bool includeForces) {
    ReferencePlatform::PlatformData& data = platformData(context);
    vector<Vec3>& pos = *data.positions;
    vector<Vec3>& force = *data.forces;
    evaluator.readParameters(context, params);
    double box[9];
    if (usePeriodic)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                box[3 * i + j] = data.periodicBoxVectors[i][j];
    int size = nativeModel.getLatentDim();
    evaluator.checkLatentSize(size);
    lastZ.resize(size);
    nativeModel.forward(&pos[0][0], usePeriodic ? box : nullptr, workspace, lastZ.data());
    double gridEnergy, restraintEnergy;
    evaluator.evaluate(lastZ.data(), size, params, gridEnergy, restraintEnergy, dVdz);
    if (includeForces) {
        nativeModel.backward(dVdz.data(), workspace);
        const vector<int>& atoms = nativeModel.getAtoms();
        const vector<double>& g = workspace.gradLocal;
        bool finite = true;
        for (double v : g)
            finite = finite && std::isfinite(v);
        if (!finite) {  // name the atoms, with the same message as the torch path
            fullGradient.assign(3 * pos.size(), 0.0);
            for (size_t k = 0; k < atoms.size(); k++)
                for (int j = 0; j < 3; j++)
                    fullGradient[3 * atoms[k] + j] = g[3 * k + j];
            LatentBiasEvaluator::checkFinite(fullGradient.data(), pos.size(), gridEnergy + restraintEnergy);
        }
        LatentBiasEvaluator::checkFinite(nullptr, 0, gridEnergy + restraintEnergy);
        for (size_t k = 0; k < atoms.size(); k++)
            for (int j = 0; j < 3; j++)
                force[atoms[k]][j] -= g[3 * k + j];
    }
    else
        LatentBiasEvaluator::checkFinite(nullptr, 0, gridEnergy + restraintEnergy);
    recordEvaluation(context, gridEnergy, restraintEnergy);
    return gridEnergy + restraintEnergy;
}

double ReferenceCalcLatentBiasForceKernel::executeTorch(ContextImpl& context, bool includeForces) {
    ReferencePlatform::PlatformData& data = platformData(context);
    vector<Vec3>& pos = *data.positions;
    vector<Vec3>& force = *data.forces;
    int numParticles = pos.size();
    evaluator.readParameters(context, params);

    // One forward pass: z = f(x), positions requiring gradients only when forces are wanted.
    torch::Tensor posTensor, z;
    try {
        vector<torch::jit::IValue> inputs;
        if (includeForces)
            posTensor = torch::from_blob(pos.data(), {numParticles, 3},
                                         torch::TensorOptions().dtype(torch::kFloat64).requires_grad(true));
        else
            posTensor = torch::from_blob(pos.data(), {numParticles, 3}, torch::kFloat64).clone();
        inputs.push_back(posTensor);
        if (usePeriodic)
            inputs.push_back(torch::from_blob(data.periodicBoxVectors, {3, 3}, torch::kFloat64).clone());
        torch::jit::IValue output;
        if (includeForces)
            output = module.forward(inputs);
        else {
            torch::NoGradGuard noGrad;
            output = module.forward(inputs);
        }
        if (!output.isTensor())
            throw OpenMMException("LatentBiasForce: the model must return a tensor z of shape (latent_dim,)");
        z = output.toTensor();
    }
    catch (const OpenMMException&) {
        throw;
    }
    catch (const std::exception& e) {
        throw OpenMMException("LatentBiasForce: the model's forward pass failed: " + describeException(e));
    }
    evaluator.checkLatentSize(z.numel());
    torch::Tensor zd = z.detach().to(torch::kCPU, torch::kFloat64).contiguous().reshape({-1});
    int size = zd.numel();
    lastZ.assign(zd.data_ptr<double>(), zd.data_ptr<double>() + size);

    // V(z) and dV/dz in double precision.
    double gridEnergy, restraintEnergy;
    evaluator.evaluate(lastZ.data(), size, params, gridEnergy, restraintEnergy, dVdz);

    // One backward pass: the vector-Jacobian product dV/dz . dz/dx.
    if (includeForces) {
        if (!checkedDifferentiable) {  // once per Context: every biased component must reach the positions
            checkDifferentiable(z, posTensor, evaluator.getBiasedComponents());
            checkedDifferentiable = true;
        }
        if (!z.requires_grad())
            checkDifferentiable(z, posTensor, {});
        try {
            torch::Tensor gradOut = torch::from_blob(dVdz.data(), {size}, torch::kFloat64).to(z.dtype()).reshape(z.sizes());
            vector<torch::Tensor> grads = torch::autograd::grad({z}, {posTensor}, {gradOut}, false, false, true);
            if (!grads[0].defined())
                throw OpenMMException("LatentBiasForce: the model's output z does not depend differentiably on the "
                                      "positions; the bias would apply zero force");
            else {
                torch::Tensor g = grads[0].to(torch::kFloat64).contiguous();
                const double* dx = g.data_ptr<double>();
                LatentBiasEvaluator::checkFinite(dx, numParticles, gridEnergy + restraintEnergy);
                for (int i = 0; i < numParticles; i++)
                    for (int j = 0; j < 3; j++)
                        force[i][j] -= dx[3 * i + j];
            }
        }
        catch (const OpenMMException&) {
            throw;
        }
        catch (const std::exception& e) {
            throw OpenMMException("LatentBiasForce: the model's backward pass failed: " + describeException(e));
        }
    }
    else
        LatentBiasEvaluator::checkFinite(nullptr, 0, gridEnergy + restraintEnergy);
    recordEvaluation(context, gridEnergy, restraintEnergy);
    return gridEnergy + restraintEnergy;
}

void ReferenceCalcLatentBiasForceKernel::recordEvaluation(ContextImpl& context, double gridEnergy,
                                                          double restraintEnergy) {
    ReferencePlatform::PlatformData& data = platformData(context);
    hasEvaluated = true;
    lastGridEnergy = gridEnergy;
    lastRestraintEnergy = restraintEnergy;
    lastPositions = *data.positions;
    if (usePeriodic)
        for (int i = 0; i < 3; i++)
            lastBox[i] = data.periodicBoxVectors[i];
    lastParams = params;
    lastVersion = evaluator.getVersion();
}

bool ReferenceCalcLatentBiasForceKernel::isLastEvaluationCurrent(ContextImpl& context) {
    if (!hasEvaluated || lastVersion != evaluator.getVersion())
        return false;
    ReferencePlatform::PlatformData& data = platformData(context);
    if (*data.positions != lastPositions)
        return false;
    if (usePeriodic)
        for (int i = 0; i < 3; i++)
            if (data.periodicBoxVectors[i] != lastBox[i])
                return false;
    vector<double> current;
    evaluator.readParameters(context, current);
    return current == lastParams;
}
