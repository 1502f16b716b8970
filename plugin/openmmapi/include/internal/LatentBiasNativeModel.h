#ifndef LATENTBIAS_NATIVE_MODEL_H_
#define LATENTBIAS_NATIVE_MODEL_H_

#include "internal/windowsExportLatentBias.h"
#include <functional>
#include <string>
#include <vector>

namespace LatentBiasPlugin {

/** Name of the declarative model description inside a latentbias model archive (TorchScript extra file). */
static const char* const LATENTBIAS_NATIVE_NAME = "latentbias_native.json";
/** Highest description format version this plugin reads. */
static const int LATENTBIAS_NATIVE_VERSION = 1;

/**
 * The latent model z = MLP((features(x) - mean) / scale) evaluated natively in double precision, without libtorch:
 * forward pass and analytic backward pass (vector-Jacobian product dV/dz -> dV/dx).
 *
 * Built from the declarative description that latentbias.export.save_model writes next to the TorchScript
 * ("latentbias_native.json" + raw little-endian float64/int64 arrays as further extra files). Everything is held in
 * flat arrays indexed by offsets (features grouped in blocks of one kind, layer weights row-major), the layout a
 * common-compute (OpenCL/CUDA) kernel uses: one work item per feature (distance, contact, dihedral), one work group
 * per aligned-coordinate block, one work item per output neuron in the dense layers.
 *
 * Features (identical to latentbias.features, including the output order):
 *  - distances |x_j - x_i| (minimum image when a box is given; OpenMM's triclinic reduction, round half to even),
 *  - contacts 1/(1 + (r/r0)^n),
 *  - dihedrals: [sin phi_1..phi_m, cos phi_1..phi_m] (atan2 convention of mdtraj/OpenMM),
 *  - aligned coordinates: the selection made whole along a spanning tree (with a box), centred and rotated by the
 *    Kabsch rotation onto the reference; the rotation's derivative is the polar-factor derivative
 *    (dR = R*Omega, Omega_ij = A'_ij / (lambda_i + lambda_j) in the right-singular basis), i.e. what autograd of the
 *    SVD-based Kabsch in latentbias.geometry gives.
 */
class OPENMM_EXPORT_LATENTBIAS LatentBiasNativeModel {
public:
    enum FeatureKind { Distances = 0, Contacts = 1, Dihedrals = 2, AlignedCoordinates = 3 };
    enum Activation { Identity = 0, Tanh, SiLU, Softplus, ELU, GELU, ReLU };
    /** One featurizer: `count` outputs starting at feature `offset`. */
    struct Block {
        int kind;
        int offset, count;       // outputs
        int indexStart;          // first entry in `indices` (pairs: 2 per feature, dihedrals: 4 per angle, aligned: n)
        int numAtoms;            // aligned: selected atoms
        int treeStart;           // aligned: first entry in `treeChild`/`treeParent` (numAtoms - 1 edges)
        int referenceStart;      // aligned: first entry in `reference` (3 per atom)
        int scratchStart;        // first entry of this block's scratch in the workspace
        double r0;               // contacts
        int exponent;            // contacts
    };
    struct Layer {
        int numInputs, numOutputs;
        int weightStart, biasStart;  // in `parameters`: weight row-major (numOutputs x numInputs), then bias
        int activation;
    };
    /** Per-evaluation storage (one per thread / Context). */
    struct Workspace {
        std::vector<double> local;       // positions of the model's atoms (3 per atom)
        std::vector<double> scratch;     // per-block intermediates for the backward pass
        std::vector<double> features;    // raw features
        std::vector<double> activations; // per layer: pre-activation values, then outputs
        std::vector<double> grad, gradNext, gradFeatures, gradLocal, blockGrad;
        bool periodic = false;
        double box[9];
    };

    /**
     * Parse and validate a description (JSON text); `readArray(name)` returns the bytes of the archive entry
     * `name`. Throws OpenMMException naming the field and the fix for every inconsistency (sizes, indices out of
     * range, non-finite or non-positive values, unknown kinds/activations, newer format versions).
     */
    static LatentBiasNativeModel fromDescription(const std::string& json,
                                                 const std::function<std::string(const std::string&)>& readArray);
    int getNumAtoms() const {
        return numAtoms;
    }
    int getLatentDim() const {
        return latentDim;
    }
    int getNumFeatures() const {
        return numFeatures;
    }
    /** Sorted unique system atom indices the model reads. */
    const std::vector<int>& getAtoms() const {
        return atoms;
    }
    /** Allocate a workspace. */
    void initWorkspace(Workspace& ws) const;
    /**
     * z (latentDim values) of the system positions `positions` (3 per system atom, nm) and box (9 values, rows a, b,
     * c in OpenMM's reduced form, nm; nullptr: no periodicity).
     */
    void forward(const double* positions, const double* box, Workspace& ws, double* z) const;
    /**
     * After forward(): gradLocal[3*k + j] of ws receives dV/dx of atom getAtoms()[k] for the given dV/dz.
     */
    void backward(const double* dVdz, Workspace& ws) const;

    // Flat data (public for tests and future device upload).
    std::vector<Block> blocks;
    std::vector<int> indices;        // local atom indices (positions in getAtoms())
    std::vector<int> treeChild, treeParent;
    std::vector<double> reference;
    std::vector<double> mean, scale;
    std::vector<Layer> layers;
    std::vector<double> parameters;

private:
    int numAtoms = 0, latentDim = 0, numFeatures = 0, scratchSize = 0, maxWidth = 0;
    std::vector<int> atoms;
};

} // namespace LatentBiasPlugin

#endif
