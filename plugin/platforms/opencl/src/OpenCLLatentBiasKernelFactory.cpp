#include "CommonLatentBiasKernels.h"
#include "openmm/KernelFactory.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/internal/windowsExport.h"
#include "openmm/opencl/OpenCLContext.h"
#include "openmm/opencl/OpenCLPlatform.h"

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

namespace LatentBiasPlugin {

/** Creates the common-compute kernel on the OpenCL platform's context (native path only). */
class OpenCLLatentBiasKernelFactory : public KernelFactory {
public:
    KernelImpl* createKernelImpl(std::string name, const Platform& platform, ContextImpl& context) const {
        OpenCLPlatform::PlatformData& data = *static_cast<OpenCLPlatform::PlatformData*>(context.getPlatformData());
        if (data.contexts.size() != 1)
            throw OpenMMException("LatentBiasForce: the OpenCL platform runs it on one device only (DeviceIndex "
                                  "names " + to_string(data.contexts.size()) + " devices); give a single device");
        if (name == CalcLatentBiasForceKernel::Name())
            return new CommonCalcLatentBiasForceKernel(name, platform, *data.contexts[0]);
        throw OpenMMException("Tried to create kernel with illegal kernel name '" + name + "'");
    }
};

} // namespace LatentBiasPlugin

extern "C" OPENMM_EXPORT void registerPlatforms() {
}

extern "C" OPENMM_EXPORT void registerKernelFactories() {
    try {
        Platform& platform = Platform::getPlatformByName("OpenCL");
        platform.registerKernelFactory(CalcLatentBiasForceKernel::Name(), new OpenCLLatentBiasKernelFactory());
    }
    catch (std::exception& ex) {
        // No OpenCL platform (OpenMM's OpenCL plugin did not load, e.g. no OpenCL runtime): nothing to register.
    }
}

extern "C" OPENMM_EXPORT void registerLatentBiasOpenCLKernelFactories() {
    registerKernelFactories();
}
