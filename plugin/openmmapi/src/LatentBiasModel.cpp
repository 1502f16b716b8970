#include "internal/LatentBiasModel.h"
#include "openmm/OpenMMException.h"
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
