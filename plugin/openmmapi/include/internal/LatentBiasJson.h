#ifndef LATENTBIAS_JSON_H_
#define LATENTBIAS_JSON_H_

#include "internal/windowsExportLatentBias.h"
#include <string>
#include <utility>
#include <vector>

namespace LatentBiasPlugin {

/**
 * A parsed JSON value (RFC 8259 subset that Python's json module writes: objects, arrays, strings with escapes,
 * numbers, true/false/null; no NaN/Infinity). Small and dependency-free: the native model description must be
 * readable without libtorch.
 */
struct OPENMM_EXPORT_LATENTBIAS JsonValue {
    enum Type { Null, Bool, Number, String, Array, Object };
    Type type = Null;
    bool boolean = false;
    double number = 0.0;
    std::string text;
    std::vector<JsonValue> items;
    std::vector<std::pair<std::string, JsonValue> > members;
    /** The member `key` of an object, or nullptr. */
    const JsonValue* find(const std::string& key) const;
    /** The member `key` of an object; throws OpenMMException naming `where` and the key when absent. */
    const JsonValue& at(const std::string& key, const std::string& where) const;
    /** This value as a string / integer / number; throws OpenMMException naming `where` otherwise. */
    const std::string& asString(const std::string& where) const;
    long long asInteger(const std::string& where) const;
    double asNumber(const std::string& where) const;
};

/** Parse JSON text; throws OpenMMException with the byte offset of the first error. */
OPENMM_EXPORT_LATENTBIAS JsonValue parseJson(const std::string& text);

} // namespace LatentBiasPlugin

#endif
