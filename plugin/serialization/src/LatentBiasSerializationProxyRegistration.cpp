#include "LatentBiasForce.h"
#include "LatentBiasForceProxy.h"
#include "openmm/serialization/SerializationProxy.h"
#include <typeinfo>

using namespace LatentBiasPlugin;
using namespace OpenMM;

// Runs when the main library is loaded (by the Python module or by the platform plugins).
extern "C" OPENMM_EXPORT_LATENTBIAS void __attribute__((constructor)) registerLatentBiasSerializationProxies() {
    SerializationProxy::registerProxy(typeid(LatentBiasForce), new LatentBiasForceProxy());
}
