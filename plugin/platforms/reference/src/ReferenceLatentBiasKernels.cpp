#include "ReferenceLatentBiasKernels.h"
#include "internal/LatentBiasModel.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/reference/ReferencePlatform.h"
#include <torch/csrc/autograd/autograd.h>
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
    usePeriodic = force.usesPeriodicBoundaryConditions();
    evaluator.initialize(force);
}

double ReferenceCalcLatentBiasForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
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
    hasEvaluated = true;
    lastGridEnergy = gridEnergy;
    lastRestraintEnergy = restraintEnergy;
    lastPositions = pos;
    if (usePeriodic)
        for (int i = 0; i < 3; i++)
            lastBox[i] = data.periodicBoxVectors[i];
    lastParams = params;
    lastVersion = evaluator.getVersion();
    return gridEnergy + restraintEnergy;
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
