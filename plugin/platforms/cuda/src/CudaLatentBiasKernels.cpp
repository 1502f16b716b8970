#include "CudaLatentBiasKernels.h"
#include "internal/LatentBiasModel.h"
#include "openmm/OpenMMException.h"
#include "openmm/common/ContextSelector.h"
#include "openmm/internal/ContextImpl.h"
#include <torch/csrc/autograd/autograd.h>
#include <map>
#include <sstream>

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

#define CHECK_RESULT(result, prefix)                                                                    \
    if (result != CUDA_SUCCESS) {                                                                       \
        std::stringstream m;                                                                            \
        m << prefix << ": " << cu.getErrorString(result) << " (" << result << ")" << " at " << __FILE__ \
          << ":" << __LINE__;                                                                           \
        throw OpenMMException(m.str());                                                                 \
    }

// Compiled at run time by OpenMM's CudaContext (which defines real/real4 for the context's precision).
static const char* LATENTBIAS_CUDA_SOURCE = R"CUDA(
extern "C" __global__ void copyInputs(real* __restrict__ posTensor, real* __restrict__ boxTensor,
        const real4* __restrict__ posq, const int* __restrict__ atomIndex, int numAtoms,
        real4 periodicBoxVecX, real4 periodicBoxVecY, real4 periodicBoxVecZ) {
    for (int atom = blockIdx.x*blockDim.x+threadIdx.x; atom < numAtoms; atom += blockDim.x*gridDim.x) {
        int index = atomIndex[atom];
        real4 pos = posq[atom];
        posTensor[3*index] = pos.x;
        posTensor[3*index+1] = pos.y;
        posTensor[3*index+2] = pos.z;
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        boxTensor[0] = periodicBoxVecX.x; boxTensor[1] = periodicBoxVecX.y; boxTensor[2] = periodicBoxVecX.z;
        boxTensor[3] = periodicBoxVecY.x; boxTensor[4] = periodicBoxVecY.y; boxTensor[5] = periodicBoxVecY.z;
        boxTensor[6] = periodicBoxVecZ.x; boxTensor[7] = periodicBoxVecZ.y; boxTensor[8] = periodicBoxVecZ.z;
    }
}

// Atomic adds: with PME, OpenMM adds its reciprocal-space forces to the same buffer from its PME stream.
extern "C" __global__ void addForces(const real* __restrict__ grads, unsigned long long* __restrict__ forceBuffers,
        const int* __restrict__ atomIndex, int numAtoms, int paddedNumAtoms) {
    for (int atom = blockIdx.x*blockDim.x+threadIdx.x; atom < numAtoms; atom += blockDim.x*gridDim.x) {
        int index = atomIndex[atom];
        atomicAdd(&forceBuffers[atom], (unsigned long long) ((long long) (-grads[3*index]*0x100000000)));
        atomicAdd(&forceBuffers[atom+paddedNumAtoms], (unsigned long long) ((long long) (-grads[3*index+1]*0x100000000)));
        atomicAdd(&forceBuffers[atom+2*paddedNumAtoms], (unsigned long long) ((long long) (-grads[3*index+2]*0x100000000)));
    }
}
)CUDA";

CudaCalcLatentBiasForceKernel::CudaCalcLatentBiasForceKernel(string name, const Platform& platform, CudaContext& cu)
    : CommonCalcLatentBiasForceKernel(name, platform, cu), cu(cu), primaryContext(nullptr), hasInitializedKernels(false),
      usePeriodic(false) {
}

CudaCalcLatentBiasForceKernel::~CudaCalcLatentBiasForceKernel() {
    if (primaryContext != nullptr)
        cuDevicePrimaryCtxRelease(cu.getDevice());
}

void CudaCalcLatentBiasForceKernel::initialize(const System& system, const LatentBiasForce& force,
                                               torch::jit::Module& module) {
    evaluator.initialize(force);
    usePeriodic = force.usesPeriodicBoundaryConditions();
    int numParticles = system.getNumParticles();
    // PyTorch always uses the device's primary context (OpenMM's is its own). Retained only here, for the libtorch
    // path: the native path (initializeNative) runs in OpenMM's context and needs no second context on the device.
    if (primaryContext == nullptr) {
        CHECK_RESULT(cuDevicePrimaryCtxRetain(&primaryContext, cu.getDevice()), "Failed to retain the primary context");
    }
    CHECK_RESULT(cuCtxPushCurrent(primaryContext), "Failed to push the CUDA context");
    try {
        const torch::Device device(torch::kCUDA, cu.getDeviceIndex());
        this->module = module;
        this->module.to(device);
        torch::TensorOptions options = torch::TensorOptions().device(device).dtype(
            cu.getUseDoublePrecision() ? torch::kFloat64 : torch::kFloat32);
        posTensor = torch::empty({numParticles, 3}, options.requires_grad(true));
        boxTensor = torch::empty({3, 3}, options);
    }
    catch (const std::exception& e) {
        CUcontext ctx;
        cuCtxPopCurrent(&ctx);
        throw OpenMMException("LatentBiasForce: cannot move the model to the GPU: " + describeException(e));
    }
    CUcontext ctx;
    CHECK_RESULT(cuCtxPopCurrent(&ctx), "Failed to pop the CUDA context");
    ContextSelector selector(cu);
    map<string, string> defines;
    CUmodule program = cu.createModule(LATENTBIAS_CUDA_SOURCE, defines);
    copyInputsKernel = cu.getKernel(program, "copyInputs");
    addForcesKernel = cu.getKernel(program, "addForces");
    hasInitializedKernels = true;
}

void CudaCalcLatentBiasForceKernel::copyInputs() {
    int numParticles = cu.getNumAtoms();
    void* posData = posTensor.data_ptr();
    void* boxData = boxTensor.data_ptr();
    ContextSelector selector(cu);
    void* args[] = {&posData, &boxData, &cu.getPosq().getDevicePointer(), &cu.getAtomIndexArray().getDevicePointer(),
                    &numParticles, cu.getPeriodicBoxVecXPointer(), cu.getPeriodicBoxVecYPointer(),
                    cu.getPeriodicBoxVecZPointer()};
    cu.executeKernel(copyInputsKernel, args, numParticles);
    CHECK_RESULT(cuCtxSynchronize(), "Failed to synchronize the CUDA context");
}

void CudaCalcLatentBiasForceKernel::addForces(torch::Tensor& gradient) {
    int numParticles = cu.getNumAtoms();
    int paddedNumAtoms = cu.getPaddedNumAtoms();
    torch::Tensor g = gradient.to(posTensor.dtype()).contiguous();
    void* gradData = g.data_ptr();
    CHECK_RESULT(cuCtxSynchronize(), "Failed to synchronize the CUDA context");
    ContextSelector selector(cu);
    void* args[] = {&gradData, &cu.getForce().getDevicePointer(), &cu.getAtomIndexArray().getDevicePointer(),
                    &numParticles, &paddedNumAtoms};
    cu.executeKernel(addForcesKernel, args, numParticles);
    CHECK_RESULT(cuCtxSynchronize(), "Failed to synchronize the CUDA context");
}

double CudaCalcLatentBiasForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
    if (nativeInitialized)
        return CommonCalcLatentBiasForceKernel::execute(context, includeForces, includeEnergy);
    evaluator.readParameters(context, params);
    CHECK_RESULT(cuCtxPushCurrent(primaryContext), "Failed to push the CUDA context");
    double gridEnergy = 0.0, restraintEnergy = 0.0;
    try {
        copyInputs();
        vector<torch::jit::IValue> inputs = {posTensor};
        if (usePeriodic)
            inputs.push_back(boxTensor);
        torch::Tensor z;
        {
            // one forward pass
            std::unique_ptr<torch::NoGradGuard> noGrad(includeForces ? nullptr : new torch::NoGradGuard());
            torch::jit::IValue output = module.forward(inputs);
            if (!output.isTensor())
                throw OpenMMException("LatentBiasForce: the model must return a tensor z of shape (latent_dim,)");
            z = output.toTensor();
        }
        evaluator.checkLatentSize(z.numel());
        torch::Tensor zd = z.detach().to(torch::kCPU, torch::kFloat64).contiguous().reshape({-1});  // synchronizes
        int size = zd.numel();
        lastZ.assign(zd.data_ptr<double>(), zd.data_ptr<double>() + size);
        evaluator.evaluate(lastZ.data(), size, params, gridEnergy, restraintEnergy, dVdz);
        if (includeForces) {
            // As on the Reference/CPU platforms: a model whose biased outputs do not reach the positions through
            // autograd (detached, integer or constant) is refused, never given exactly zero force.
            if (!checkedDifferentiable) {  // once per Context: every biased component must reach the positions
                checkDifferentiable(z, posTensor, evaluator.getBiasedComponents());
                checkedDifferentiable = true;
            }
            if (!z.requires_grad())
                checkDifferentiable(z, posTensor, {});
            // one backward pass: dV/dz . dz/dx
            torch::Tensor gradOut = torch::from_blob(dVdz.data(), {size}, torch::kFloat64).to(z.options()).reshape(z.sizes());
            vector<torch::Tensor> grads = torch::autograd::grad({z}, {posTensor}, {gradOut}, false, false, true);
            if (!grads[0].defined())
                throw OpenMMException("LatentBiasForce: the model's output z does not depend differentiably on the "
                                      "positions; the bias would apply zero force");
            // Non-finite forces never reach the integrator: one reduction on the device; on failure the gradient
            // comes to the host and the atoms are named as on the Reference platform.
            if (!torch::isfinite(grads[0]).all().item<bool>()) {
                torch::Tensor g = grads[0].detach().to(torch::kCPU, torch::kFloat64).contiguous();
                LatentBiasEvaluator::checkFinite(g.data_ptr<double>(), (int) (g.numel() / 3),
                                                 gridEnergy + restraintEnergy);
            }
            LatentBiasEvaluator::checkFinite(nullptr, 0, gridEnergy + restraintEnergy);
            addForces(grads[0]);
        }
        else
            LatentBiasEvaluator::checkFinite(nullptr, 0, gridEnergy + restraintEnergy);
    }
    catch (const std::exception& e) {
        CUcontext ctx;
        cuCtxPopCurrent(&ctx);
        if (dynamic_cast<const OpenMMException*>(&e) != nullptr)
            throw;
        throw OpenMMException("LatentBiasForce: the model evaluation failed: " + describeException(e));
    }
    CUcontext ctx;
    CHECK_RESULT(cuCtxPopCurrent(&ctx), "Failed to pop the CUDA context");
    hasEvaluated = true;
    lastGridEnergy = gridEnergy;
    lastRestraintEnergy = restraintEnergy;
    return gridEnergy + restraintEnergy;
}
