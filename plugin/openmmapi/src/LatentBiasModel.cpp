#include "internal/LatentBiasModel.h"
#include "openmm/OpenMMException.h"
#include <memory>
#include <sstream>
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

string describeException(const std::exception& e) {
    string what = e.what();
    while (!what.empty() && (what.back() == '\n' || what.back() == ' '))
        what.pop_back();
    return what;
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
