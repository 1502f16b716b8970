#ifndef LATENTBIAS_FORCE_PROXY_H_
#define LATENTBIAS_FORCE_PROXY_H_

#include "internal/windowsExportLatentBias.h"
#include "openmm/serialization/SerializationProxy.h"

namespace LatentBiasPlugin {

/**
 * Serializes a LatentBiasForce: the model bytes (base64), the grid layout and values, the wall constant, the
 * restraints, the periodic-box flag, force group and name. Registered when the plugin's main library loads.
 */
class OPENMM_EXPORT_LATENTBIAS LatentBiasForceProxy : public OpenMM::SerializationProxy {
public:
    LatentBiasForceProxy();
    void serialize(const void* object, OpenMM::SerializationNode& node) const;
    void* deserialize(const OpenMM::SerializationNode& node) const;
};

} // namespace LatentBiasPlugin

#endif
