#ifndef LATENTBIAS_UTILITIES_H_
#define LATENTBIAS_UTILITIES_H_

#include "internal/windowsExportLatentBias.h"
#include <string>

namespace LatentBiasPlugin {

/** Standard base64 (RFC 4648, with padding) of arbitrary bytes. */
OPENMM_EXPORT_LATENTBIAS std::string base64Encode(const std::string& data);
/** Inverse of base64Encode; whitespace is ignored. Throws OpenMMException for invalid input. */
OPENMM_EXPORT_LATENTBIAS std::string base64Decode(const std::string& text);
/**
 * Find the integer value of key `key` at the top level of a JSON object (nested objects and arrays are skipped).
 * Returns false when the key is absent or its value is not an integer.
 */
OPENMM_EXPORT_LATENTBIAS bool findTopLevelJsonInteger(const std::string& json, const std::string& key, long long& value);

/**
 * 64-bit FNV-1a digest of bytes as 16 lowercase hex digits: detects accidental corruption (bit rot, truncation,
 * edits) of serialized data; it is not a cryptographic hash.
 */
OPENMM_EXPORT_LATENTBIAS std::string checksum64(const std::string& data);

} // namespace LatentBiasPlugin

#endif
