#ifndef LATENTBIAS_MODEL_H_
#define LATENTBIAS_MODEL_H_

#include "internal/LatentBiasNativeModel.h"
#include "internal/windowsExportLatentBias.h"
#include <torch/script.h>
#include <string>
#include <vector>

namespace LatentBiasPlugin {

/** Name of the metadata file inside a latentbias model archive. */
static const char* const LATENTBIAS_METADATA_NAME = "latentbias.json";

/**
 * Load a TorchScript archive from its bytes onto the CPU, in evaluation mode. When metadata is not null it receives
 * the text of the archive's latentbias.json ("" when absent). Throws OpenMMException when the bytes are not a
 * loadable TorchScript archive.
 */
OPENMM_EXPORT_LATENTBIAS torch::jit::Module loadLatentModel(const std::string& data, std::string* metadata = nullptr);

/**
 * Throw OpenMMException unless every latent component in `components` of z (the model output for `positions`, a
 * tensor that requires gradients) depends differentiably on the positions. A detached, integer or constant output
 * would otherwise give exactly zero force while the bias energy is recorded (silently wrong physics).
 */
OPENMM_EXPORT_LATENTBIAS void checkDifferentiable(const torch::Tensor& z, const torch::Tensor& positions,
                                                  const std::vector<int>& components);

/**
 * The native description of a model archive (latentbias_native.json and its array files), read without loading the
 * TorchScript code. Returns false when the archive has no description (a model outside latentbias' family); throws
 * OpenMMException when it has an invalid one or the bytes are not an archive.
 */
OPENMM_EXPORT_LATENTBIAS bool loadNativeModel(const std::string& data, LatentBiasNativeModel& model);

/** The whole text of an exception with its cause first: a TorchScript interpreter error ends with the cause
 *  ("RuntimeError: linalg.svd: ... non-finite values."), which is moved in front of the traceback. */
OPENMM_EXPORT_LATENTBIAS std::string describeException(const std::exception& e);

} // namespace LatentBiasPlugin

#endif
