#ifndef LATENTBIAS_CHECKSUM_H_
#define LATENTBIAS_CHECKSUM_H_

#include "internal/windowsExportLatentBias.h"
#include <cstdint>
#include <map>
#include <string>

namespace LatentBiasPlugin {

/** SHA-256 (FIPS 180-4) of bytes: the 32-byte digest. Self-contained (no OpenSSL, nothing from the wheels). */
OPENMM_EXPORT_LATENTBIAS std::string sha256(const std::string& data);
/** SHA-256 of bytes as 64 lowercase hex digits (Python's hashlib.sha256(data).hexdigest()). */
OPENMM_EXPORT_LATENTBIAS std::string sha256Hex(const std::string& data);

/** CRC-32 of bytes as zip stores it (zlib.crc32). */
OPENMM_EXPORT_LATENTBIAS uint32_t crc32(const std::string& data);

/**
 * The CRC-32 the zip central directory records for each entry (full entry names), read from the bytes of a zip
 * archive (ZIP64 included). Empty when the central directory cannot be read (the caller then relies on the
 * SHA-256 checksums alone). libtorch's zip reader does not check these CRCs.
 */
OPENMM_EXPORT_LATENTBIAS std::map<std::string, uint32_t> zipEntryCrcs(const std::string& data);

/**
 * The text Python writes with json.dumps(value, sort_keys=True) for the value that json.loads(text) reads, with the
 * top-level object member `dropKey` removed ("" removes nothing): keys sorted by code point at every level, the
 * separators ", " and ": ", strings escaped to ASCII (\uXXXX, lowercase hex), integers as read, floats as Python's
 * repr (shortest round trip), NaN/Infinity as Python writes them. It is the canonical form over which latentbias
 * computes the model metadata's checksum (latentbias/export.py:_metadata_digest). Throws OpenMMException (with the
 * byte offset) for text Python's json module would refuse. When topLevel is not null and the value is an object, it
 * receives the canonical text of each top-level member (ASCII keys), `dropKey` included.
 */
OPENMM_EXPORT_LATENTBIAS std::string canonicalJson(const std::string& text, const std::string& dropKey = "",
                                                   std::map<std::string, std::string>* topLevel = nullptr);

/** Python's repr() of a double (shortest round-trip digits; exponent form below 1e-4 and from 1e16 on). */
OPENMM_EXPORT_LATENTBIAS std::string pythonFloatRepr(double x);

/**
 * Check the zip structure of an archive as Python's zipfile reads it (latentbias.load_model reads model files with it),
 * and a little more strictly: the end record (with its zip64 records, which must be where Python and libtorch's miniz
 * both look for them), the central directory (where the end record says, as many entries as it counts, each readable
 * by Python: zip version at most 6.3, not encrypted, stored or deflated, a name that decodes and appears once, a
 * well-formed extra field) and each entry's local header (its signature, and the same name as the central directory,
 * which miniz does not read; the data ending before the next entry). Returns "" when the structure is sound, else what
 * is damaged (naming the entry). It does not inflate the data: the CRC-32 and SHA-256 checks do that.
 */
OPENMM_EXPORT_LATENTBIAS std::string zipStructureProblem(const std::string& data);

/**
 * Verify the checksums a latentbias model file carries (model format 2 and later; latentbias/export.py): the
 * metadata's "checksums" object holds metadata_sha256, the SHA-256 of the canonical metadata without that key
 * (canonicalJson), and content_sha256, the SHA-256 over the archive's other entries (sorted by name without the
 * archive's top folder, each as name, a zero byte and the entry's own SHA-256; torch's random .data/serialization_id
 * left out). The zip structure is checked first (zipStructureProblem). Every entry but that id is then read, whether
 * or not the file carries checksums (Python's loader reads them all too): it must inflate (it is read twice, into
 * buffers prefilled differently, because libtorch's getRecord does not report a deflate stream that fails to inflate
 * and returns a partly unwritten buffer) and match the CRC-32 of the zip central directory (zipEntryCrcs), which
 * names a damaged entry. Throws OpenMMException naming the
 * damaged entry (or the checksum that does not match) and the fix. Returns true when the checksums were verified,
 * false when the archive carries none: a plain TorchScript archive (no latentbias.json) or a model of format 1 (the
 * caller warns that it is loaded unverified). A format-1 model whose metadata holds checksums had its
 * format_version edited and is refused. An archive libtorch cannot open at all returns false (loading it then fails).
 * Defined in LatentBiasModel.cpp (it reads the archive with libtorch).
 */
OPENMM_EXPORT_LATENTBIAS bool verifyModelChecksums(const std::string& data);

} // namespace LatentBiasPlugin

#endif
