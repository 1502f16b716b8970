#include "internal/LatentBiasModel.h"
#include "internal/LatentBiasChecksum.h"
#include "internal/LatentBiasJson.h"
#include "openmm/OpenMMException.h"
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <sstream>
#include <vector>
#include <cctype>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/autograd/autograd.h>

using namespace std;

namespace LatentBiasPlugin {

torch::jit::Module loadLatentModel(const string& data, string* metadata) {
    istringstream stream(data);
    torch::jit::ExtraFilesMap extra;
    extra[LATENTBIAS_METADATA_NAME] = "";
    try {
        torch::jit::Module module = torch::jit::load(stream, torch::Device(torch::kCPU), extra);
        module.eval();
        if (metadata != nullptr)
            *metadata = extra[LATENTBIAS_METADATA_NAME];
        return module;
    }
    catch (const std::exception& e) {
        throw OpenMM::OpenMMException("LatentBiasForce: the model is not a loadable TorchScript archive (export it "
                                      "with latentbias.save_model or torch.jit.save): " + describeException(e));
    }
}

bool verifyModelChecksums(const string& data) {
    const string fix = "re-export the model (latentbias.save_model / `latentbias train`) or restore the file from a "
                       "copy";
    istringstream stream(data);
    unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
    try {
        reader.reset(new caffe2::serialize::PyTorchStreamReader(&stream));
    }
    catch (const std::exception&) {
        return false;  // not an archive at all: loadLatentModel reports it ("not a loadable TorchScript archive")
    }
    // libtorch's zip reader (miniz) reads little of the zip structure: neither the local headers' names nor most of
    // the central directory's fields. Python's zipfile, which latentbias.load_model reads the file with, checks them
    // and refuses a damaged file; so must this route (a flipped byte in a local header's name was accepted here).
    string problem = zipStructureProblem(data);
    if (!problem.empty())
        throw OpenMM::OpenMMException("LatentBiasForce: the model's zip structure is damaged (" + problem + "): the "
                                      "file is corrupt; " + fix);
    vector<string> names;
    try {
        names = reader->getAllRecords();
    }
    catch (const std::exception& e) {  // an entry outside the archive's folder: never skip the checks for it
        const c10::Error* error = dynamic_cast<const c10::Error*>(&e);
        throw OpenMM::OpenMMException(string("LatentBiasForce: the model's archive is damaged (") +
                                      (error != nullptr ? error->what_without_backtrace() : e.what()) + "): the file "
                                      "is corrupt; " + fix);
    }
    // libtorch's own message without its C++ backtrace
    auto brief = [](const std::exception& e) -> string {
        const c10::Error* error = dynamic_cast<const c10::Error*>(&e);
        return error != nullptr ? error->what_without_backtrace() : e.what();
    };
    // libtorch's zip reader does not check the entries' CRC-32: compare them here, to name a damaged entry.
    map<string, uint32_t> crcs;
    for (const auto& c : zipEntryCrcs(data)) {
        size_t slash = c.first.find('/');
        crcs[slash == string::npos ? c.first : c.first.substr(slash + 1)] = c.second;
    }
    // libtorch's getRecord does not notice a compressed entry that does not inflate: miniz sets no error code when
    // the deflate stream itself is corrupt (it only returns false, which libtorch ignores), so getRecord returns a
    // buffer whose tail was never written, i.e. whatever the allocator left there. When an earlier read of the same
    // entry left its intact bytes in that memory, the CRC-32 and SHA-256 matched and a damaged file was accepted,
    // depending on the process's allocation history. Each entry is therefore inflated twice, into buffers prefilled
    // with 0x00 and with 0xFF: bytes the inflater did not write differ between the two.
    auto readEntry = [&](const string& name) -> string {
        string bytes, again;
        try {
            size_t size = reader->getRecordSize(name);
            bytes.assign(size, '\0');
            again.assign(size, '\xff');
            if (size > 0) {
                reader->getRecord(name, &bytes[0], size);
                reader->getRecord(name, &again[0], size);
            }
        }
        catch (const std::exception& e) {
            throw OpenMM::OpenMMException("LatentBiasForce: the model's archive entry '" + name + "' is damaged (" +
                                          brief(e) + "): the file is corrupt; " + fix);
        }
        if (bytes != again)
            throw OpenMM::OpenMMException("LatentBiasForce: the model's archive entry '" + name + "' is damaged (its "
                                          "compressed data do not inflate): the file is corrupt; " + fix);
        auto crc = crcs.find(name);
        if (crc == crcs.end() || crc32(bytes) != crc->second)
            throw OpenMM::OpenMMException("LatentBiasForce: the model's archive entry '" + name + "' is damaged (its "
                                          "bytes do not match the CRC-32 the archive records for it): the file is "
                                          "corrupt; " + fix);
        return bytes;
    };
    const string metaName = string("extra/") + LATENTBIAS_METADATA_NAME;
    // Every entry but torch's random id is read, and so checked (it inflates, its CRC-32), as Python's loader reads
    // them: a damaged entry is refused even in a file without checksums (format 1 or a plain TorchScript archive).
    vector<string> sorted;
    for (const string& name : names)
        if (name != ".data/serialization_id")  // torch's random id per save, which Python does not read either
            sorted.push_back(name);
    sort(sorted.begin(), sorted.end());
    string meta, digests;
    bool hasMeta = false;
    for (const string& name : sorted) {
        string bytes = readEntry(name);
        if (name == metaName) {
            meta = bytes;
            hasMeta = true;
        }
        else
            digests += name + string(1, '\0') + sha256(bytes);
    }
    if (!hasMeta)
        return false;  // not a latentbias model file (a plain TorchScript archive): no checksums to verify
    string body;
    map<string, string> top;
    try {
        body = canonicalJson(meta, "checksums", &top);
    }
    catch (const OpenMM::OpenMMException& e) {
        throw OpenMM::OpenMMException(string("LatentBiasForce: the model's metadata (archive entry ") + metaName +
                                      ") is corrupt: " + e.what() + "; " + fix);
    }
    // Python: int(metadata.get("format_version", 0)) >= 2
    double formatVersion = 0;
    if (top.count("format_version")) {
        const string& v = top["format_version"];
        string number = v;
        if (!v.empty() && v[0] == '"')
            number = parseJson(v).text;
        const char* begin = number.c_str();
        char* end = nullptr;
        formatVersion = strtod(begin, &end);
        if (end == begin || *end != '\0' || !std::isfinite(formatVersion))
            throw OpenMM::OpenMMException("LatentBiasForce: the model's metadata (" + metaName + ") has an invalid "
                                          "format_version " + v + "; " + fix);
    }
    if (std::trunc(formatVersion) < 2) {
        // Format 1 carried no checksums. One that carries them was written by format 2 or later and its
        // format_version was edited, which would otherwise skip every check: refuse it.
        if (top.count("checksums"))
            throw OpenMM::OpenMMException("LatentBiasForce: the model's metadata (archive entry " + metaName + ") says "
                                          "format_version " + top["format_version"] + ", which carries no checksums, "
                                          "but it holds checksums: the file was edited (a format-1 file never held "
                                          "them); " + fix);
        return false;
    }
    string metadataSum, contentSum;
    if (top.count("checksums")) {
        try {
            JsonValue sums = parseJson(top["checksums"]);
            const JsonValue* m = sums.find("metadata_sha256");
            const JsonValue* c = sums.find("content_sha256");
            if (m != nullptr && m->type == JsonValue::String)
                metadataSum = m->text;
            if (c != nullptr && c->type == JsonValue::String)
                contentSum = c->text;
        }
        catch (const OpenMM::OpenMMException&) {
        }
    }
    if (metadataSum.empty() || metadataSum != sha256Hex(body))
        throw OpenMM::OpenMMException("LatentBiasForce: the model's metadata (archive entry " + metaName + ") does "
                                      "not match the checksum stored with it (checksums.metadata_sha256): the file is "
                                      "corrupt or was edited; " + fix);
    if (contentSum != sha256Hex(digests))
        throw OpenMM::OpenMMException("LatentBiasForce: the model's code, weights or native arrays (the archive entries "
                                      "other than " + metaName + ") do not match the checksum stored in its metadata "
                                      "(checksums.content_sha256): the file is corrupt or was edited; " + fix);
    return true;
}

bool loadNativeModel(const string& data, LatentBiasNativeModel& model) {
    istringstream stream(data);
    unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
    try {
        reader.reset(new caffe2::serialize::PyTorchStreamReader(&stream));
    }
    catch (const std::exception& e) {
        throw OpenMM::OpenMMException("LatentBiasForce: the model is not a TorchScript archive: " + describeException(e));
    }
    auto read = [&](const string& name) -> string {
        string record = "extra/" + name;
        if (name.find('/') != string::npos || name.find("..") != string::npos || !reader->hasRecord(record))
            throw OpenMM::OpenMMException("no archive entry " + record);
        auto result = reader->getRecord(record);
        return string(static_cast<const char*>(std::get<0>(result).get()), std::get<1>(result));
    };
    string json;
    try {
        if (!reader->hasRecord(string("extra/") + LATENTBIAS_NATIVE_NAME))
            return false;
        json = read(LATENTBIAS_NATIVE_NAME);
    }
    catch (const OpenMM::OpenMMException&) {
        throw;
    }
    catch (const std::exception& e) {
        throw OpenMM::OpenMMException("LatentBiasForce: cannot read the model's native description: " +
                                      describeException(e));
    }
    model = LatentBiasNativeModel::fromDescription(json, [&](const string& name) {
        try {
            return read(name);
        }
        catch (const OpenMM::OpenMMException&) {
            throw;
        }
        catch (const std::exception& e) {
            throw OpenMM::OpenMMException(describeException(e));
        }
    });
    return true;
}

namespace {

bool startsWith(const string& line, const string& prefix) {
    return line.compare(0, prefix.size(), prefix) == 0;
}

/** "RuntimeError: ...", "torch.jit.Error: ...", "c10::Error: ..." at column 0. */
bool isExceptionLine(const string& line) {
    if (line.empty() || !(isalpha(static_cast<unsigned char>(line[0])) || line[0] == '_'))
        return false;
    size_t colon = line.find(": ");
    if (colon == string::npos)
        return false;
    string name = line.substr(0, colon);
    if (name.find_first_of(" \t") != string::npos)
        return false;
    auto endsWith = [&](const string& suffix) {
        return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    return endsWith("Error") || endsWith("Exception");
}

string join(const vector<string>& lines, size_t begin, size_t end) {
    string out;
    for (size_t i = begin; i < end; i++)
        out += (i > begin ? "\n" : "") + lines[i];
    return out;
}

} // namespace

string describeException(const std::exception& e) {
    // the same rule as latentbias/torchscript_errors.py: the cause first, the TorchScript/C++ traceback after it
    vector<string> lines;
    stringstream in(e.what());
    for (string line; getline(in, line);)
        lines.push_back(line);
    while (!lines.empty() && lines.back().find_first_not_of(" \t\r") == string::npos)
        lines.pop_back();
    size_t causeBegin = 0, causeEnd = lines.size();
    bool interpreter = false;
    for (const string& line : lines)
        interpreter = interpreter || startsWith(line, "Traceback of TorchScript") ||
                      startsWith(line, "The following operation failed in the TorchScript interpreter.");
    if (interpreter) {
        size_t last = lines.size();
        for (size_t i = 0; i < lines.size(); i++)
            if (isExceptionLine(lines[i]))
                last = i;
        if (last == lines.size())  // no exception line: the last non-indented line
            for (size_t i = 0; i < lines.size(); i++)
                if (!lines[i].empty() && !isspace(static_cast<unsigned char>(lines[i][0])))
                    last = i;
        causeBegin = (last == lines.size() ? 0 : last);
    }
    for (size_t i = causeBegin; i < causeEnd; i++)
        if (startsWith(lines[i], "Exception raised from ")) {
            causeEnd = i;
            break;
        }
    string cause = join(lines, causeBegin, causeEnd);
    string rest = join(lines, 0, causeBegin);
    string tail = join(lines, causeEnd, lines.size());
    if (!tail.empty())
        rest += (rest.empty() ? "" : "\n") + tail;
    if (rest.empty())
        return cause;
    return cause + "\nTorchScript traceback:\n" + rest;
}

void checkDifferentiable(const torch::Tensor& z, const torch::Tensor& positions, const vector<int>& components) {
    const char* advice = " The bias would apply exactly zero force while its energy is recorded. Make the model's "
                         "output a differentiable function of the positions (no .detach(), integer/boolean "
                         "counts, or torch.no_grad() inside forward; use a smooth switching function for counts).";
    if (!z.requires_grad() || !z.is_floating_point())
        throw OpenMM::OpenMMException(string("LatentBiasForce: the model's output z does not depend differentiably "
                                             "on the positions (it has no gradient).") + advice);
    torch::Tensor flat = z.reshape({-1});
    for (int c : components) {
        vector<torch::Tensor> grads;
        try {
            grads = torch::autograd::grad({flat[c]}, {positions}, {}, true, false, true);
        }
        catch (const std::exception& e) {
            throw OpenMM::OpenMMException("LatentBiasForce: the model's backward pass failed: " + describeException(e));
        }
        if (!grads[0].defined()) {
            stringstream msg;
            msg << "LatentBiasForce: latent component z[" << c << "] is biased but does not depend differentiably on "
                << "the positions." << advice;
            throw OpenMM::OpenMMException(msg.str());
        }
    }
}

} // namespace LatentBiasPlugin
