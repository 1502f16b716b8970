#include "ReferenceLatentBiasKernels.h"
#include "openmm/KernelFactory.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/internal/windowsExport.h"
#include "openmm/reference/ReferencePlatform.h"

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

namespace LatentBiasPlugin {

class ReferenceLatentBiasKernelFactory : public KernelFactory {
public:
    KernelImpl* createKernelImpl(std::string name, const Platform& platform, ContextImpl& context) const {
        if (name == CalcLatentBiasForceKernel::Name())
            return new ReferenceCalcLatentBiasForceKernel(name, platform);
        throw OpenMMException("Tried to create kernel with illegal kernel name '" + name + "'");
    }
};

} // namespace LatentBiasPlugin

extern "C" OPENMM_EXPORT void registerPlatforms() {
}

/*
 * Register for every platform derived from ReferencePlatform: the Reference platform and the CPU platform (whose
 * class derives from ReferencePlatform and keeps positions/forces in ReferencePlatform::PlatformData), as
 * openmm-torch does. The CPU platform must already be registered, i.e. OpenMM's own plugins loaded first (import
 * openmm does that), before this plugin is loaded.
 */
extern "C" OPENMM_EXPORT void registerKernelFactories() {
    for (int i = 0; i < Platform::getNumPlatforms(); i++) {
        Platform& platform = Platform::getPlatform(i);
        if (dynamic_cast<ReferencePlatform*>(&platform) != NULL)
            platform.registerKernelFactory(CalcLatentBiasForceKernel::Name(), new ReferenceLatentBiasKernelFactory());
    }
}

extern "C" OPENMM_EXPORT void registerLatentBiasReferenceKernelFactories() {
    registerKernelFactories();
}
