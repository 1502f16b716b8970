#ifndef CUDA_LATENTBIAS_KERNELS_H_
#define CUDA_LATENTBIAS_KERNELS_H_

#include "CommonLatentBiasKernels.h"
#include "openmm/cuda/CudaContext.h"
#include <cuda.h>

namespace LatentBiasPlugin {

/**
 * CUDA implementation of CalcLatentBiasForceKernel, following openmm-torch's CudaCalcTorchForceKernel: the model
 * and the position tensor live on OpenMM's device (PyTorch uses the device's primary context, pushed around every
 * call), positions are copied from posq by a small kernel, and -dV/dx is added to OpenMM's fixed-point force
 * buffer by another. z (d numbers) is copied to the host, where V(z) and dV/dz are computed in double precision
 * (LatentBiasEvaluator), and dV/dz goes back to the device for the single backward pass.
 *
 * As on the Reference/CPU platforms, a model whose biased outputs have no gradient with respect to the positions is
 * refused at the first force evaluation, and non-finite forces or energies raise an exception naming the atoms.
 *
 * Models with a native description take the common-compute path instead (CommonCalcLatentBiasForceKernel: the
 * model's features and MLP in OpenMM's device kernels, no libtorch).
 */
class CudaCalcLatentBiasForceKernel : public CommonCalcLatentBiasForceKernel {
public:
    CudaCalcLatentBiasForceKernel(std::string name, const OpenMM::Platform& platform, OpenMM::CudaContext& cu);
    ~CudaCalcLatentBiasForceKernel();
    void initialize(const OpenMM::System& system, const LatentBiasForce& force, torch::jit::Module& module) override;
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) override;

private:
    void copyInputs();
    void addForces(torch::Tensor& gradient);
    OpenMM::CudaContext& cu;
    CUcontext primaryContext;
    bool hasInitializedKernels, usePeriodic;
    bool checkedDifferentiable = false;  // the biased components were checked to reach the positions
    torch::jit::Module module;
    torch::Tensor posTensor, boxTensor;
    CUfunction copyInputsKernel, addForcesKernel;
};

} // namespace LatentBiasPlugin

#endif
