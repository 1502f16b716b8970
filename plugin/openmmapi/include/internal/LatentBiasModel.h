#ifndef LATENTBIAS_MODEL_H_
#define LATENTBIAS_MODEL_H_

#include "internal/windowsExportLatentBias.h"
#include <torch/script.h>
#include <string>

namespace LatentBiasPlugin {

/** Name of the metadata file inside a latentbias model archive. */
static const char* const LATENTBIAS_METADATA_NAME = "latentbias.json";

/**
 * Load a TorchScript archive from its bytes onto the CPU, in evaluation mode. When metadata is not null it receives
 * the text of the archive's latentbias.json ("" when absent). Throws OpenMMException when the bytes are not a
 * loadable TorchScript archive.
 */
OPENMM_EXPORT_LATENTBIAS torch::jit::Module loadLatentModel(const std::string& data, std::string* metadata = nullptr);

} // namespace LatentBiasPlugin

#endif
