/* LatentBiasForce: the OPES transform of the grid and OPES kernel deposits (issue 10 item 6). */

#include "LatentBiasForce.h"
#include "internal/LatentBiasGrid.h"
#include "openmm/OpenMMException.h"
#include <cmath>
#include <sstream>

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

void LatentBiasForce::setGridLogTransform(const string& normalizationParameter, double defaultNormalization,
                                          double prefactor, double epsilon) {
    if (normalizationParameter.empty()) {
        gridNormalizationParameter.clear();
        gridNormalizationDefault = gridLogPrefactor = gridLogEpsilon = 1.0;
        return;
    }
    if (!(std::isfinite(prefactor) && prefactor > 0 && std::isfinite(epsilon) && epsilon > 0 &&
          std::isfinite(defaultNormalization) && defaultNormalization > 0)) {
        stringstream msg;
        msg << "LatentBiasForce::setGridLogTransform: the prefactor (" << prefactor << "), epsilon (" << epsilon
            << ") and the default normalization (" << defaultNormalization << ") must be finite and > 0";
        throw OpenMMException(msg.str());
    }
    if (normalizationParameter == gridScaleParameter)
        throw OpenMMException("LatentBiasForce::setGridLogTransform: '" + normalizationParameter + "' is the grid "
                              "scale parameter; give the normalization its own name");
    for (const auto& r : getRestraints())
        if (r.centerParameter == normalizationParameter || r.forceConstantParameter == normalizationParameter)
            throw OpenMMException("LatentBiasForce::setGridLogTransform: '" + normalizationParameter + "' is a "
                                  "restraint parameter; give the normalization its own name");
    gridNormalizationParameter = normalizationParameter;
    gridNormalizationDefault = defaultNormalization;
    gridLogPrefactor = prefactor;
    gridLogEpsilon = epsilon;
}

void LatentBiasForce::addGridKernel(const vector<double>& center, const vector<double>& width, double weight,
                                    double cutoff) {
    if (gridDims.empty())
        throw OpenMMException("LatentBiasForce::addGridKernel: add the grid dimensions first");
    int ndim = gridDims.size();
    if ((int) center.size() != ndim || (int) width.size() != ndim) {
        stringstream msg;
        msg << "LatentBiasForce::addGridKernel: the grid has " << ndim << " dimensions but " << center.size()
            << " centre and " << width.size() << " width values were given";
        throw OpenMMException(msg.str());
    }
    for (int k = 0; k < ndim; k++)
        if (!std::isfinite(center[k]) || !(std::isfinite(width[k]) && width[k] > 0)) {
            stringstream msg;
            msg << "LatentBiasForce::addGridKernel: dimension " << k << " has centre " << center[k] << " and width "
                << width[k] << "; both must be finite and the width > 0";
            throw OpenMMException(msg.str());
        }
    if (!std::isfinite(weight)) {
        stringstream msg;
        msg << "LatentBiasForce::addGridKernel: the weight must be finite, got " << weight;
        throw OpenMMException(msg.str());
    }
    if (!(std::isfinite(cutoff) && cutoff >= 0)) {
        stringstream msg;
        msg << "LatentBiasForce::addGridKernel: the cutoff (in widths) must be finite and >= 0 (0: none), got "
            << cutoff;
        throw OpenMMException(msg.str());
    }
    vector<LatentBiasGrid::Axis> axes;
    size_t total = 1;
    int n[3] = {1, 1, 1};
    for (int k = 0; k < ndim; k++) {
        const GridDimension& d = gridDims[k];
        axes.push_back({d.minValue, d.maxValue, d.size, d.periodic});
        n[k] = d.size;
        total *= d.size;
    }
    LatentBiasGrid::DensityKernel kernel = {center, width, weight, cutoff};
    if (gridInterpolation == "hermite") {   // exact values and node derivatives on the support
        vector<double*> arrays = hermiteArrays();
        LatentBiasGrid::addDensityKernelToTable(axes, kernel, arrays.data());
    }
    else if (cutoff > 0) {
        if (gridValues.empty())
            gridValues.assign(total, 0.0);
        vector<vector<int> > idx;
        vector<double> block;
        LatentBiasGrid::densityKernelBlock(axes, kernel, idx, block);
        if (!block.empty()) {
            size_t s[3] = {1, 1, 1};
            for (int k = 0; k < ndim; k++)
                s[k] = idx[k].size();
            for (size_t i2 = 0; i2 < s[2]; i2++)
                for (size_t i1 = 0; i1 < s[1]; i1++)
                    for (size_t i0 = 0; i0 < s[0]; i0++) {
                        size_t node = idx[0][i0];
                        if (ndim > 1)
                            node += (size_t) n[0] * idx[1][i1];
                        if (ndim > 2)
                            node += (size_t) n[0] * n[1] * idx[2][i2];
                        gridValues[node] += block[i0 + s[0] * (i1 + s[1] * i2)];
                    }
        }
    }
    else {
        if (gridValues.empty())
            gridValues.assign(total, 0.0);
        vector<vector<double> > factor(3, vector<double>(1, 1.0));
        for (int k = 0; k < ndim; k++) {
            factor[k] = LatentBiasGrid::gaussianFactor(axes[k], center[k], width[k], 0.0);
            double norm = sqrt(2.0 * M_PI) * width[k];
            for (double& v : factor[k])
                v /= norm;
        }
        size_t node = 0;
        for (int i2 = 0; i2 < n[2]; i2++)
            for (int i1 = 0; i1 < n[1]; i1++)
                for (int i0 = 0; i0 < n[0]; i0++, node++)
                    gridValues[node] += weight * factor[0][i0] * factor[1][i1] * factor[2][i2];
    }
    if (gridDeposits.size() >= (size_t) MaxLoggedDeposits) {
        gridEpoch = nextGridEpoch();
        gridDeposits.clear();
    }
    else {
        GridDeposit deposit = {center, width, weight, cutoff};
        deposit.densityKernel = true;
        gridDeposits.push_back(deposit);
    }
}
