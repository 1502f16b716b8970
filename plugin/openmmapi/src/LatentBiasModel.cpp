#include "internal/LatentBiasModel.h"
#include "openmm/OpenMMException.h"
#include <sstream>

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
        string what = e.what();
        size_t cut = what.find('\n');
        throw OpenMM::OpenMMException("LatentBiasForce: the model is not a loadable TorchScript archive (export it "
                                      "with latentbias.save_model or torch.jit.save): " + what.substr(0, cut));
    }
}

} // namespace LatentBiasPlugin
