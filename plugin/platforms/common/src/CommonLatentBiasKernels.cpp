#include "CommonLatentBiasKernels.h"
#include "CommonLatentBiasKernelSources.h"
#include "openmm/OpenMMException.h"
#include "openmm/common/ContextSelector.h"
#include "openmm/internal/ContextImpl.h"
#include <climits>
#include <cmath>
#include <map>
#include <sstream>

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

namespace {

/** Sizes are int on the device: refuse (with the array's name) anything that does not fit. */
int checkedSize(long long size, const char* what) {
    if (size < 0 || size > INT_MAX / 4) {
        stringstream msg;
        msg << "LatentBiasForce: the model's " << what << " (" << size << " entries) is too large for the device "
            "kernels; use the Reference or CPU platform";
        throw OpenMMException(msg.str());
    }
    return (int) size;
}

/** Device arrays must not be empty: pad with one unused element. */
template <class T>
vector<T> padded(vector<T> v) {
    if (v.empty())
        v.push_back(T());
    return v;
}

void uploadInts(ComputeContext& cc, ComputeArray& array, const vector<int>& values, const string& name) {
    vector<int> v = padded(values);
    array.initialize<int>(cc, v.size(), name);
    array.upload(v);
}

void uploadReals(ComputeContext& cc, ComputeArray& array, const vector<double>& values, const string& name) {
    vector<double> v = padded(values);
    array.initialize(cc, v.size(), cc.getUseDoublePrecision() ? sizeof(double) : sizeof(float), name);
    array.upload(v, true);
}

void allocateReals(ComputeContext& cc, ComputeArray& array, long long size, const string& name) {
    array.initialize(cc, max(1, checkedSize(size, name.c_str())),
                     cc.getUseDoublePrecision() ? sizeof(double) : sizeof(float), name);
}

} // namespace

void CommonCalcLatentBiasForceKernel::initialize(const System& system, const LatentBiasForce& force,
                                                 torch::jit::Module& module) {
    throw OpenMMException("LatentBiasForce: the " + getPlatform().getName() + " platform evaluates only models with a "
                          "native description (models of latentbias' family saved with latentbias.save_model); this "
                          "model is TorchScript only (or the force asks for setEvaluationPath(\"torch\")). Use the "
                          "Reference or CPU platform (or CUDA) for the libtorch path, or re-export the model");
}

void CommonCalcLatentBiasForceKernel::initializeNative(const System& system, const LatentBiasForce& force,
                                                       const LatentBiasNativeModel& model) {
    if (model.getNumAtoms() != system.getNumParticles())
        throw OpenMMException("LatentBiasForce: the model's native description is for " +
                              to_string(model.getNumAtoms()) + " atoms but the System has " +
                              to_string(system.getNumParticles()));
    if (model.layers.size() > 64)
        throw OpenMMException("LatentBiasForce: the model has more than 64 layers");
    evaluator.initialize(force);
    usePeriodic = force.usesPeriodicBoundaryConditions();
    latentDim = model.getLatentDim();
    evaluator.checkLatentSize(latentDim);
    modelAtoms = model.getAtoms();
    platformName = getPlatform().getName();
    const int numLocal = modelAtoms.size();
    ContextSelector selector(cc);

    // Local index of each system atom (-1: not read by the model).
    vector<int> localOfHost(system.getNumParticles(), -1);
    for (int k = 0; k < numLocal; k++)
        localOfHost[modelAtoms[k]] = k;
    uploadInts(cc, localOf, localOfHost, "latentBiasLocalOf");
    allocateReals(cc, localPos, 3LL * numLocal, "latentBiasLocalPositions");

    // Blocks (with the first gradient slot of each) and, per local atom, the slots that add to its gradient.
    vector<int> blockHost;
    vector<double> r0Host;
    vector<vector<int>> atomSlots(numLocal);
    long long numSlots = 0, scratchSize = 0;
    for (const LatentBiasNativeModel::Block& b : model.blocks) {
        const int* idx = model.indices.data() + b.indexStart;
        blockHost.insert(blockHost.end(), {b.kind, b.offset, b.count, b.indexStart, b.numAtoms, b.treeStart,
                                           b.referenceStart, b.scratchStart, b.exponent, checkedSize(numSlots, "gradient slots")});
        r0Host.push_back(b.kind == LatentBiasNativeModel::Contacts ? b.r0 : 1.0);
        if (b.kind == LatentBiasNativeModel::Distances || b.kind == LatentBiasNativeModel::Contacts) {
            for (int k = 0; k < b.count; k++) {
                int slot = checkedSize(numSlots + k, "gradient slots");
                atomSlots[idx[2 * k]].push_back(2 * slot + 1);
                atomSlots[idx[2 * k + 1]].push_back(2 * slot);
            }
            numSlots += b.count;
            scratchSize = max(scratchSize, (long long) b.scratchStart + 5LL * b.count);
        }
        else if (b.kind == LatentBiasNativeModel::Dihedrals) {
            int m = b.count / 2;
            for (int k = 0; k < m; k++) {
                int slot = checkedSize(numSlots + 3LL * k, "gradient slots");
                const int* q = idx + 4 * k;
                atomSlots[q[0]].push_back(2 * slot + 1);          // -gb1
                atomSlots[q[1]].push_back(2 * slot);              // +gb1
                atomSlots[q[1]].push_back(2 * (slot + 1) + 1);    // -gb2
                atomSlots[q[2]].push_back(2 * (slot + 1));        // +gb2
                atomSlots[q[2]].push_back(2 * (slot + 2) + 1);    // -gb3
                atomSlots[q[3]].push_back(2 * (slot + 2));        // +gb3
            }
            numSlots += 3LL * m;
            scratchSize = max(scratchSize, (long long) b.scratchStart + 11LL * m);
        }
        else if (b.kind == LatentBiasNativeModel::AlignedCoordinates) {
            for (int k = 0; k < b.numAtoms; k++)
                atomSlots[idx[k]].push_back(2 * checkedSize(numSlots + k, "gradient slots"));
            numSlots += b.numAtoms;
            scratchSize = max(scratchSize, (long long) b.scratchStart + 3LL * b.numAtoms + 21);
        }
        else
            throw OpenMMException("LatentBiasForce: unknown feature kind " + to_string(b.kind) + " in the native model");
    }
    checkedSize(2 * numSlots + 1, "gradient slots");
    vector<int> startHost(numLocal + 1, 0), entryHost;
    for (int k = 0; k < numLocal; k++) {
        entryHost.insert(entryHost.end(), atomSlots[k].begin(), atomSlots[k].end());
        startHost[k + 1] = checkedSize(entryHost.size(), "gradient slot list");
    }
    uploadInts(cc, blocks, blockHost, "latentBiasBlocks");
    uploadReals(cc, blockR0, r0Host, "latentBiasContactR0");
    uploadInts(cc, indices, model.indices, "latentBiasIndices");
    uploadInts(cc, treeChild, model.treeChild, "latentBiasTreeChild");
    uploadInts(cc, treeParent, model.treeParent, "latentBiasTreeParent");
    uploadReals(cc, reference, model.reference, "latentBiasReference");
    uploadReals(cc, mean, model.mean, "latentBiasMean");
    uploadReals(cc, scale, model.scale, "latentBiasScale");
    allocateReals(cc, scratch, scratchSize, "latentBiasScratch");
    allocateReals(cc, features, model.getNumFeatures(), "latentBiasFeatures");
    allocateReals(cc, slots, 3 * numSlots, "latentBiasGradientSlots");
    uploadInts(cc, atomStart, startHost, "latentBiasAtomStart");
    uploadInts(cc, slotEntries, entryHost, "latentBiasSlotEntries");

    // Layers: numInputs, numOutputs, weightStart, biasStart, activation, inputStart (in `activations`).
    // Layer l reads its input at `offset` in `activations`: the standardised features for l = 0, the previous
    // layer's outputs after it (each layer stores pre-activations, then outputs), as the C++ backward pass does.
    vector<int> layerHost;
    long long offset = 0, maxWidth = model.getNumFeatures();
    for (const LatentBiasNativeModel::Layer& l : model.layers) {
        layerHost.insert(layerHost.end(), {l.numInputs, l.numOutputs, l.weightStart, l.biasStart, l.activation,
                                           checkedSize(offset, "activations")});
        offset += (long long) l.numInputs + l.numOutputs;
        maxWidth = max(maxWidth, (long long) l.numOutputs);
    }
    long long activationSize = offset + model.layers.back().numOutputs;
    uploadInts(cc, layers, layerHost, "latentBiasLayers");
    uploadReals(cc, parameters, model.parameters, "latentBiasParameters");
    allocateReals(cc, activations, activationSize, "latentBiasActivations");
    allocateReals(cc, gradA, maxWidth, "latentBiasGradA");
    allocateReals(cc, gradB, maxWidth, "latentBiasGradB");
    allocateReals(cc, zBuffer, latentDim + 5, "latentBiasZ");
    allocateReals(cc, dVdzArray, latentDim, "latentBiasdVdz");
    zHost.assign(latentDim + 5, 0.0);
    zBuffer.upload(zHost, true);
    uploadInts(cc, badAtoms, vector<int>(numLocal, 0), "latentBiasBadAtoms");
    numParticles = system.getNumParticles();

    // The bias: static layout now, values by uploadBias() (again after updateParametersInContext).
    LatentBiasEvaluator::DeviceBias bias;
    evaluator.getDeviceBias(bias);
    const int gridDims = bias.dimInts.size() / 4;
    long long gridTotal = gridDims > 0 ? (long long) bias.nodeDerivatives.size() / (1 << gridDims) : 0;
    checkedSize(bias.nodeDerivatives.size(), "bias grid");
    uploadInts(cc, dimInts, bias.dimInts, "latentBiasGridDimensions");
    uploadInts(cc, restraintComponents, bias.restraintComponents, "latentBiasRestraintComponents");
    allocateReals(cc, dimRange, bias.dimRange.size(), "latentBiasGridRange");
    allocateReals(cc, points, bias.points.size(), "latentBiasGridPoints");
    allocateReals(cc, nodeDerivs, bias.nodeDerivatives.size(), "latentBiasGridNodeDerivatives");
    allocateReals(cc, biasReals, 4, "latentBiasWallConstant");   // wall constant, log prefactor, epsilon, ln epsilon
    allocateReals(cc, restraintReals, bias.restraintReals.size(), "latentBiasRestraints");
    allocateReals(cc, restraintParams, 2LL * evaluator.getNumRestraints() + 2, "latentBiasRestraintParameters");
    uploadBias();
    uploadedParams.clear();

    map<string, string> defines;
    defines["LB_NUM_ATOMS"] = cc.intToString(cc.getNumAtoms());
    defines["LB_PADDED_NUM_ATOMS"] = cc.intToString(cc.getPaddedNumAtoms());
    defines["LB_NUM_BLOCKS"] = cc.intToString(model.blocks.size());
    defines["LB_NUM_LAYERS"] = cc.intToString(model.layers.size());
    defines["LB_NUM_FEATURES"] = cc.intToString(model.getNumFeatures());
    defines["LB_LATENT_DIM"] = cc.intToString(latentDim);
    defines["LB_EPS"] = cc.getUseDoublePrecision() ? "1e-17" : "1e-7f";
    if (usePeriodic)
        defines["LB_PERIODIC"] = "1";
    defines["LB_GRID_DIMS"] = cc.intToString(gridDims);
    defines["LB_GRID_TOTAL"] = cc.intToString(checkedSize(gridTotal, "bias grid"));
    defines["LB_NUM_RESTRAINTS"] = cc.intToString(evaluator.getNumRestraints());
    // the OPES transform of the grid (LatentBiasForce::setGridLogTransform): of the interpolated table, or of the
    // nodes of a Hermite table (setGridInterpolation("hermite"))
    if (bias.logTransform && bias.logNodes)
        defines["LB_GRID_LOG_NODES"] = "1";
    else if (bias.logTransform)
        defines["LB_GRID_LOG"] = "1";
    ComputeProgram program = cc.compileProgram(LatentBiasKernelSources::latentBiasNative, defines);
    gatherKernel = program->createKernel("gatherPositions");
    gatherKernel->addArg(cc.getPosq());
    gatherKernel->addArg(cc.getAtomIndexArray());
    gatherKernel->addArg(localOf);
    gatherKernel->addArg(localPos);
    forwardKernel = program->createKernel("forwardModel");
    for (ComputeArray* a : {&localPos, &blocks, &blockR0, &indices, &treeChild, &treeParent, &reference, &mean, &scale,
                            &layers, &parameters, &scratch, &features, &activations, &zBuffer})
        forwardKernel->addArg(*a);
    for (int i = 0; i < 3; i++)
        forwardKernel->addArg();  // box vectors, set before each evaluation
    for (ComputeArray* a : {&dimInts, &dimRange, &points, &nodeDerivs, &biasReals, &restraintComponents,
                            &restraintReals, &restraintParams, &dVdzArray})
        forwardKernel->addArg(*a);
    forwardKernel->addArg(cc.getEnergyBuffer());
    backwardKernel = program->createKernel("backwardModel");
    for (ComputeArray* a : {&blocks, &blockR0, &indices, &reference, &scale, &layers, &parameters, &scratch,
                            &activations, &gradA, &gradB, &dVdzArray, &slots, &zBuffer})
        backwardKernel->addArg(*a);
    applyKernel = program->createKernel("applyForces");
    applyKernel->addArg(cc.getAtomIndexArray());
    applyKernel->addArg(localOf);
    applyKernel->addArg(atomStart);
    applyKernel->addArg(slotEntries);
    applyKernel->addArg(slots);
    applyKernel->addArg(cc.getLongForceBuffer());
    applyKernel->addArg(zBuffer);
    applyKernel->addArg(badAtoms);
    // The model kernels run in one work group (their layers are separated by barriers).
    blockSize = min(256, min(forwardKernel->getMaxBlockSize(), backwardKernel->getMaxBlockSize()));
    if (blockSize < 1)
        throw OpenMMException("LatentBiasForce: the device reports no usable work-group size for the model kernels");
    forceThreads = cc.getNumAtoms();
    nativeInitialized = true;
}

void CommonCalcLatentBiasForceKernel::setBoxArgs() {
    Vec3 a, b, c;
    if (usePeriodic)
        cc.getPeriodicBoxVectors(a, b, c);
    else
        a = b = c = Vec3(0, 0, 0);
    if (cc.getUseDoublePrecision()) {
        forwardKernel->setArg(15, mm_double4(a[0], a[1], a[2], 0.0));
        forwardKernel->setArg(16, mm_double4(b[0], b[1], b[2], 0.0));
        forwardKernel->setArg(17, mm_double4(c[0], c[1], c[2], 0.0));
    }
    else {
        forwardKernel->setArg(15, mm_float4((float) a[0], (float) a[1], (float) a[2], 0.0f));
        forwardKernel->setArg(16, mm_float4((float) b[0], (float) b[1], (float) b[2], 0.0f));
        forwardKernel->setArg(17, mm_float4((float) c[0], (float) c[1], (float) c[2], 0.0f));
    }
}

void CommonCalcLatentBiasForceKernel::uploadBias() {
    LatentBiasEvaluator::DeviceBias bias;
    evaluator.getDeviceBias(bias);
    if (!bias.dimRange.empty()) {
        dimRange.upload(bias.dimRange, true);
        points.upload(bias.points, true);
        nodeDerivs.upload(bias.nodeDerivatives, true);
    }
    biasReals.upload(vector<double>{bias.wallForceConstant, bias.logPrefactor, bias.logEpsilon, log(bias.logEpsilon)},
                     true);
    if (!bias.restraintReals.empty())
        restraintReals.upload(bias.restraintReals, true);
}

void CommonCalcLatentBiasForceKernel::copyParametersToContext(ContextImpl& context, const LatentBiasForce& force) {
    evaluator.updateParameters(force);
    if (nativeInitialized) {
        ContextSelector selector(cc);
        uploadBias();
    }
}

void CommonCalcLatentBiasForceKernel::downloadAndCheck() const {
    ContextSelector selector(cc);
    zBuffer.download(zHost, true);
    bool forces = zHost[latentDim] != 0.0, values = zHost[latentDim + 3] != 0.0;
    if (!forces && !values)
        return;
    // The error path only: what the device recorded, then every flag cleared (the Context stays usable).
    vector<int> bad;
    badAtoms.download(bad);
    vector<double> positions;
    localPos.download(positions, true);
    vector<double> cleared = zHost;
    cleared[latentDim] = cleared[latentDim + 3] = cleared[latentDim + 4] = 0.0;
    const_cast<ComputeArray&>(zBuffer).upload(cleared, true);
    const_cast<ComputeArray&>(badAtoms).upload(vector<int>(bad.size(), 0));
    const string& platform = platformName;
    if (values) {
        stringstream msg;
        msg << "LatentBiasForce: the model returned a non-finite latent value or bias energy on the " << platform
            << " platform (z =";
        for (int i = 0; i < latentDim; i++)
            msg << " " << zHost[i];
        msg << "); are the positions finite and inside the model's domain?";
        vector<int> nonFinite;
        for (size_t k = 0; k < modelAtoms.size(); k++)
            if (!(std::isfinite(positions[3 * k]) && std::isfinite(positions[3 * k + 1]) &&
                  std::isfinite(positions[3 * k + 2])))
                nonFinite.push_back(modelAtoms[k]);
        if (!nonFinite.empty()) {
            msg << " The model's atoms with non-finite positions: " << nonFinite.size() << " (indices ";
            for (size_t j = 0; j < nonFinite.size() && j < 8; j++)
                msg << (j > 0 ? ", " : "") << nonFinite[j];
            msg << (nonFinite.size() > 8 ? ", ..." : "") << ").";
        }
        throw OpenMMException(msg.str());
    }
    // The same message as the Reference and CPU platforms (LatentBiasEvaluator::checkFinite), naming the atoms whose
    // force was not finite in the first such evaluation since the last check.
    vector<double> dVdx(3 * (size_t) numParticles, 0.0);
    bool named = false;
    for (size_t k = 0; k < modelAtoms.size() && k < bad.size(); k++)
        if (bad[k] != 0) {
            dVdx[3 * modelAtoms[k]] = NAN;
            named = true;
        }
    stringstream where;
    where << " (" << platform << " platform: checked after every energy evaluation and every " << CHECK_INTERVAL
          << " force evaluations; the atoms named are those of the first evaluation with a non-finite force since the "
          << "last check, and non-finite forces were not applied)";
    if (named) {
        try {
            LatentBiasEvaluator::checkFinite(dVdx.data(), numParticles, 0.0);
        }
        catch (const OpenMMException& e) {
            throw OpenMMException(string(e.what()) + where.str());
        }
    }
    throw OpenMMException("LatentBiasForce: a non-finite force (NaN or inf) was computed on the " + platform +
                          " platform, e.g. two atoms of a distance feature at the same position or a degenerate "
                          "dihedral; check the structure" + where.str());
}

vector<double> CommonCalcLatentBiasForceKernel::getLastLatentValues() const {
    if (!nativeInitialized)  // CUDA's libtorch path keeps z on the host
        return CalcLatentBiasForceKernel::getLastLatentValues();
    if (!hasEvaluated)
        return vector<double>();
    downloadAndCheck();
    return vector<double>(zHost.begin(), zHost.begin() + latentDim);
}

vector<double> CommonCalcLatentBiasForceKernel::getLastEnergies() const {
    if (!nativeInitialized)
        return CalcLatentBiasForceKernel::getLastEnergies();
    if (!hasEvaluated)
        return vector<double>();
    downloadAndCheck();
    return {zHost[latentDim + 1], zHost[latentDim + 2]};
}

double CommonCalcLatentBiasForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
    if (!nativeInitialized)
        throw OpenMMException("LatentBiasForce: the device kernel was not initialised");
    evaluator.readParameters(context, params);
    evaluator.checkParameters(params);
    ContextSelector selector(cc);
    if (params != uploadedParams) {
        restraintParams.upload(params, true);
        uploadedParams = params;
    }
    setBoxArgs();
    gatherKernel->execute(forceThreads);
    forwardKernel->execute(blockSize, blockSize);
    if (includeForces) {
        backwardKernel->execute(blockSize, blockSize);
        applyKernel->execute(forceThreads);
    }
    hasEvaluated = true;
    if (includeEnergy || ++evaluations % CHECK_INTERVAL == 0)
        downloadAndCheck();
    return 0.0;  // the energy is in OpenMM's energy buffer
}
