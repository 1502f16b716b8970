#include "CudaLatentBiasKernels.h"
#include "openmm/KernelFactory.h"
#include "openmm/OpenMMException.h"
#include "openmm/cuda/CudaPlatform.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/internal/windowsExport.h"

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

namespace LatentBiasPlugin {

class CudaLatentBiasKernelFactory : public KernelFactory {
public:
    KernelImpl* createKernelImpl(std::string name, const Platform& platform, ContextImpl& context) const {
        CudaPlatform::PlatformData& data = *static_cast<CudaPlatform::PlatformData*>(context.getPlatformData());
        CudaContext& cu = *data.contexts[0];
        if (name == CalcLatentBiasForceKernel::Name())
            return new CudaCalcLatentBiasForceKernel(name, platform, cu);
        throw OpenMMException("Tried to create kernel with illegal kernel name '" + name + "'");
    }
};

} // namespace LatentBiasPlugin

extern "C" OPENMM_EXPORT void registerPlatforms() {
}

extern "C" OPENMM_EXPORT void registerKernelFactories() {
    try {
        Platform& platform = Platform::getPlatformByName("CUDA");
        platform.registerKernelFactory(CalcLatentBiasForceKernel::Name(), new CudaLatentBiasKernelFactory());
    }
    catch (std::exception& ex) {
        // No CUDA platform (the openmm-cuda-12 wheel is not installed or its plugin did not load).
    }
}

extern "C" OPENMM_EXPORT void registerLatentBiasCudaKernelFactories() {
    registerKernelFactories();
}
