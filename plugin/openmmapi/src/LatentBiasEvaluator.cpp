#include "internal/LatentBiasEvaluator.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include <algorithm>
#include <cmath>
#include <sstream>

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

LatentBiasEvaluator::LatentBiasEvaluator() : hasGrid(false), wallForceConstant(0.0), expectedLatentDim(-1),
        minimumLatentDim(0), version(0) {
}

void LatentBiasEvaluator::initialize(const LatentBiasForce& force) {
    dims = force.getGridDimensions();
    restraints = force.getRestraints();
    expectedLatentDim = force.getModelLatentDim();
    minimumLatentDim = 0;
    for (const auto& d : dims)
        minimumLatentDim = max(minimumLatentDim, d.component + 1);
    for (const auto& r : restraints)
        minimumLatentDim = max(minimumLatentDim, r.component + 1);
    if (expectedLatentDim >= 0 && minimumLatentDim > expectedLatentDim) {
        stringstream msg;
        msg << "LatentBiasForce: a grid dimension or restraint uses latent component " << minimumLatentDim - 1
            << " but the model returns " << expectedLatentDim << " components";
        throw OpenMMException(msg.str());
    }
    hasGrid = false;
    gridScaleParameter = force.getGridScaleParameter();
    gridNormalizationParameter = force.getGridNormalizationParameter();
    gridHermite = force.getGridInterpolation() == "hermite";
    updateParameters(force);
}

void LatentBiasEvaluator::updateParameters(const LatentBiasForce& force) {
    const auto& newDims = force.getGridDimensions();
    if (newDims.size() != dims.size())
        throw OpenMMException("LatentBiasForce::updateParametersInContext: the number of grid dimensions has changed");
    for (size_t i = 0; i < dims.size(); i++) {
        const auto& a = dims[i];
        const auto& b = newDims[i];
        if (a.component != b.component || a.minValue != b.minValue || a.maxValue != b.maxValue || a.size != b.size ||
                a.periodic != b.periodic)
            throw OpenMMException("LatentBiasForce::updateParametersInContext: the grid layout (components, ranges, "
                                  "sizes, periodicity) cannot change in an existing Context; only the values can");
    }
    const auto& newRestraints = force.getRestraints();
    if (newRestraints.size() != restraints.size())
        throw OpenMMException("LatentBiasForce::updateParametersInContext: the number of restraints has changed");
    for (size_t i = 0; i < restraints.size(); i++) {
        if (restraints[i].component != newRestraints[i].component ||
                restraints[i].centerParameter != newRestraints[i].centerParameter ||
                restraints[i].forceConstantParameter != newRestraints[i].forceConstantParameter)
            throw OpenMMException("LatentBiasForce::updateParametersInContext: a restraint's component or parameter "
                                  "names changed; that needs a new Context");
    }
    if (force.getGridScaleParameter() != gridScaleParameter)
        throw OpenMMException("LatentBiasForce::updateParametersInContext: the grid scale parameter changed; that "
                              "needs a new Context");
    if (force.getGridNormalizationParameter() != gridNormalizationParameter)
        throw OpenMMException("LatentBiasForce::updateParametersInContext: the grid log transform was switched on or "
                              "off or its normalization parameter renamed; that needs a new Context");
    if ((force.getGridInterpolation() == "hermite") != gridHermite)
        throw OpenMMException("LatentBiasForce::updateParametersInContext: the grid interpolation changed (\"" +
                              force.getGridInterpolation() + "\"); that needs a new Context");
    restraints = newRestraints;
    wallForceConstant = force.getWallForceConstant();
    logPrefactor = force.getGridLogPrefactor();
    logEpsilon = force.getGridLogEpsilon();
    const auto& deposits = force.getGridDeposits();
    if (!dims.empty() && hasGrid && force.getGridValuesEpoch() == gridEpoch && deposits.size() >= gridDepositsApplied) {
        // only Gaussians were added since this Context's last update: add them to the interpolant locally
        vector<LatentBiasGrid::DensityKernel> kernels;   // consecutive OPES kernels: one local block update
        for (size_t i = gridDepositsApplied; i < deposits.size() && gridHermite; i++) {
            // exact values and node derivatives on each kernel's support, the Force's own arithmetic (so the
            // Context's table equals the Force's bit for bit)
            if (deposits[i].densityKernel)
                grid.addExactDensityKernel({deposits[i].center, deposits[i].width, deposits[i].height,
                                            deposits[i].cutoff});
            else
                grid.addExactGaussian(deposits[i].center, deposits[i].width, deposits[i].height, deposits[i].cutoff);
        }
        for (size_t i = gridDepositsApplied; i < deposits.size() && !gridHermite; i++) {
            if (deposits[i].densityKernel) {
                kernels.push_back({deposits[i].center, deposits[i].width, deposits[i].height, deposits[i].cutoff});
                if (i + 1 == deposits.size() || !deposits[i + 1].densityKernel) {
                    grid.addDensityKernels(kernels);
                    kernels.clear();
                }
                continue;
            }
            vector<vector<double> > factors;
            for (size_t k = 0; k < dims.size(); k++)
                factors.push_back(LatentBiasGrid::gaussianFactor(grid.getAxes()[k], deposits[i].center[k],
                                                                 deposits[i].width[k], deposits[i].cutoff));
            grid.addSeparable(factors, deposits[i].height);
        }
        gridDepositsApplied = deposits.size();
    }
    else if (!dims.empty()) {
        vector<double> values = force.getGridValues();
        size_t total = 1;
        for (const auto& d : dims)
            total *= d.size;
        if (values.empty())
            values.assign(total, 0.0);
        force.checkGridValues(values);
        vector<LatentBiasGrid::Axis> axes;
        for (const auto& d : dims)
            axes.push_back({d.minValue, d.maxValue, d.size, d.periodic});
        if (gridHermite)
            grid.initializeHermite(axes, values, force.getGridNodeDerivatives());
        else
            grid.initialize(axes, values);
        hasGrid = true;
        gridEpoch = force.getGridValuesEpoch();
        gridDepositsApplied = deposits.size();
    }
    version++;
}

void LatentBiasEvaluator::checkLatentSize(long long size) const {
    if (expectedLatentDim >= 0 && size != expectedLatentDim) {
        stringstream msg;
        msg << "LatentBiasForce: the model returned " << size << " latent values but " << expectedLatentDim
            << " were expected (latent_dim of the model metadata); check that forward(positions, box) returns z of "
               "shape (latent_dim,)";
        throw OpenMMException(msg.str());
    }
    if (size < minimumLatentDim) {
        stringstream msg;
        msg << "LatentBiasForce: the model returned " << size << " latent values but latent component "
            << minimumLatentDim - 1 << " is biased";
        throw OpenMMException(msg.str());
    }
}

void LatentBiasEvaluator::readParameters(ContextImpl& context, vector<double>& params) const {
    size_t n = restraints.size();
    params.resize(2 * n + 2);
    for (size_t i = 0; i < n; i++) {
        params[2 * i] = context.getParameter(restraints[i].centerParameter);
        params[2 * i + 1] = context.getParameter(restraints[i].forceConstantParameter);
    }
    params[2 * n] = gridScaleParameter.empty() ? 1.0 : context.getParameter(gridScaleParameter);
    params[2 * n + 1] = gridNormalizationParameter.empty() ? 1.0 : context.getParameter(gridNormalizationParameter);
}

vector<int> LatentBiasEvaluator::getBiasedComponents() const {
    vector<int> components;
    for (const auto& d : dims)
        components.push_back(d.component);
    for (const auto& r : restraints)
        components.push_back(r.component);
    sort(components.begin(), components.end());
    components.erase(unique(components.begin(), components.end()), components.end());
    return components;
}

void LatentBiasEvaluator::checkFinite(const double* dVdx, int numParticles, double energy) {
    vector<int> bad;
    for (int i = 0; i < numParticles; i++)
        if (!(std::isfinite(dVdx[3 * i]) && std::isfinite(dVdx[3 * i + 1]) && std::isfinite(dVdx[3 * i + 2])))
            bad.push_back(i);
    if (bad.empty() && std::isfinite(energy))
        return;
    stringstream msg;
    msg << "LatentBiasForce: the bias ";
    if (!std::isfinite(energy))
        msg << "energy is " << energy << (bad.empty() ? "" : " and its ");
    if (!bad.empty()) {
        msg << "force is not finite on " << bad.size() << " atom(s) (indices ";
        for (size_t j = 0; j < bad.size() && j < 8; j++)
            msg << (j > 0 ? ", " : "") << bad[j];
        msg << (bad.size() > 8 ? ", ..." : "") << ")";
    }
    msg << ". Typical causes: coincident atoms in a distance/angle feature (zero distance), positions far outside "
           "the training domain, or a model whose derivative is undefined there; check these atoms' positions.";
    throw OpenMMException(msg.str());
}

void LatentBiasEvaluator::checkParameters(const vector<double>& params) const {
    // Context.setParameter accepts any double: refuse values that would silently change the physics.
    for (size_t i = 0; i < restraints.size(); i++) {
        double center = params[2 * i], k = params[2 * i + 1];
        if (!std::isfinite(center)) {
            stringstream msg;
            msg << "LatentBiasForce: the restraint centre parameter '" << restraints[i].centerParameter << "' is "
                << center << "; set it to a finite latent value with Context.setParameter";
            throw OpenMMException(msg.str());
        }
        if (!(std::isfinite(k) && k >= 0)) {
            stringstream msg;
            msg << "LatentBiasForce: the restraint force constant parameter '" << restraints[i].forceConstantParameter
                << "' is " << k << "; it must be finite and >= 0 (0 switches the restraint off)";
            throw OpenMMException(msg.str());
        }
    }
    size_t n = restraints.size();
    if (params.size() > 2 * n && !std::isfinite(params[2 * n])) {
        stringstream msg;
        msg << "LatentBiasForce: the grid scale parameter '" << gridScaleParameter << "' is " << params[2 * n]
            << "; it must be finite";
        throw OpenMMException(msg.str());
    }
    if (params.size() > 2 * n + 1 && !(std::isfinite(params[2 * n + 1]) && params[2 * n + 1] > 0)) {
        stringstream msg;
        msg << "LatentBiasForce: the grid normalization parameter '" << gridNormalizationParameter << "' is "
            << params[2 * n + 1] << "; it must be finite and > 0 (OPES' Z)";
        throw OpenMMException(msg.str());
    }
}

void LatentBiasEvaluator::evaluate(const double* z, int size, const vector<double>& params, double& gridEnergy,
                                   double& restraintEnergy, vector<double>& dVdz) const {
    for (int i = 0; i < size; i++)
        if (!std::isfinite(z[i])) {
            stringstream msg;
            msg << "LatentBiasForce: the model returned a non-finite latent value z[" << i << "] = " << z[i]
                << " (are the positions finite and inside the model's domain?)";
            throw OpenMMException(msg.str());
        }
    checkParameters(params);
    dVdz.assign(size, 0.0);
    gridEnergy = 0.0;
    restraintEnergy = 0.0;
    if (hasGrid) {
        int ndim = dims.size();
        double t[3], grad[3];
        bool inside[3];
        double walls = 0.0;
        for (int k = 0; k < ndim; k++) {
            const auto& d = dims[k];
            double value = z[d.component];
            inside[k] = true;
            if (d.periodic)
                t[k] = value;  // LatentBiasGrid wraps it
            else {
                // table(min(max(z, min), max)) + 0.5*kw*(max(0, z-max)^2 + max(0, min-z)^2), as CustomCVBackend.
                double above = max(0.0, value - d.maxValue);
                double below = max(0.0, d.minValue - value);
                walls += above * above + below * below;
                dVdz[d.component] += wallForceConstant * (above - below);
                t[k] = min(max(value, d.minValue), d.maxValue);
                inside[k] = (value >= d.minValue && value <= d.maxValue);
            }
        }
        // scale*table(...) + walls, like CustomCVBackend's latent_bias_scale parameter
        size_t n = restraints.size();
        double scale = params.size() > 2 * n ? params[2 * n] : 1.0;
        double table;
        if (gridHermite && !gridNormalizationParameter.empty()) {
            // OPES on a Hermite table of S: the Hermite interpolant of V itself, its node values and derivatives
            // those of prefactor * ln(max(S, 0)/N + epsilon) from the exact ones of S (chain rule at each node)
            double norm = params.size() > 2 * n + 1 ? params[2 * n + 1] : 1.0;
            table = grid.evaluateLogHermite(t, grad, logPrefactor, logEpsilon, norm);
        }
        else
            table = grid.evaluate(t, grad);
        if (!gridNormalizationParameter.empty() && !gridHermite) {
            // OPES: prefactor * ln(max(P, 0)/N + epsilon), derivative prefactor * P'/(P + epsilon N) where P > 0
            double norm = params.size() > 2 * n + 1 ? params[2 * n + 1] : 1.0;
            double p = max(table, 0.0);
            double chain = table > 0 ? logPrefactor / (p + logEpsilon * norm) : 0.0;
            table = logPrefactor * log(p / norm + logEpsilon);
            for (int k = 0; k < ndim; k++)
                grad[k] *= chain;
        }
        gridEnergy = scale * table + 0.5 * wallForceConstant * walls;
        for (int k = 0; k < ndim; k++)
            if (inside[k])
                dVdz[dims[k].component] += scale * grad[k];
    }
    for (size_t i = 0; i < restraints.size(); i++) {
        const auto& r = restraints[i];
        double value = z[r.component];
        double center = params[2 * i], k = params[2 * i + 1];
        double dev = value - center;
        if (r.period > 0)
            dev -= r.period * std::nearbyint(dev / r.period);  // round half to even, like torch.round / np.round
        double above = max(0.0, value - r.upperWall);
        double below = max(0.0, r.lowerWall - value);
        restraintEnergy += 0.5 * k * dev * dev + 0.5 * r.wallForceConstant * (above * above + below * below);
        dVdz[r.component] += k * dev + r.wallForceConstant * (above - below);
    }
}

void LatentBiasEvaluator::getDeviceBias(DeviceBias& bias) const {
    bias = DeviceBias();
    bias.wallForceConstant = wallForceConstant;
    bias.logTransform = !gridNormalizationParameter.empty();
    bias.logNodes = bias.logTransform && gridHermite;
    bias.logPrefactor = logPrefactor;
    bias.logEpsilon = logEpsilon;
    if (hasGrid) {
        // The grid's own node derivatives when it is already in Hermite form (mixed periodicity, local deposits);
        // otherwise the per-axis construction of the same spline from its values.
        LatentBiasGrid converted;
        if (grid.getNodeDerivatives().empty())
            converted.initialize(grid.getAxes(), grid.getValues(), true);
        const LatentBiasGrid& hermite = grid.getNodeDerivatives().empty() ? converted : grid;
        for (size_t k = 0; k < dims.size(); k++) {
            bias.dimInts.insert(bias.dimInts.end(), {dims[k].component, dims[k].periodic ? 1 : 0, dims[k].size,
                                                     (int) bias.points.size()});
            bias.dimRange.insert(bias.dimRange.end(), {dims[k].minValue, dims[k].maxValue});
            const vector<double>& x = hermite.getPoints(k);
            bias.points.insert(bias.points.end(), x.begin(), x.end());
        }
        for (const vector<double>& block : hermite.getNodeDerivatives())
            bias.nodeDerivatives.insert(bias.nodeDerivatives.end(), block.begin(), block.end());
    }
    for (const auto& r : restraints) {
        bias.restraintComponents.push_back(r.component);
        bias.restraintReals.insert(bias.restraintReals.end(), {r.period, r.lowerWall, r.upperWall, r.wallForceConstant});
    }
}
