/* LatentBiasForce: the grid as a Hermite table with exact node derivatives (issue 10 item 6). */

#include "LatentBiasForce.h"
#include "internal/LatentBiasGrid.h"
#include "openmm/OpenMMException.h"
#include <cmath>
#include <sstream>

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

void LatentBiasForce::setGridInterpolation(const string& interpolation) {
    if (interpolation != "spline" && interpolation != "hermite")
        throw OpenMMException("LatentBiasForce::setGridInterpolation: '" + interpolation + "' is not an "
                              "interpolation; use \"spline\" (OpenMM's cubic spline of the values) or \"hermite\" "
                              "(values and exact node derivatives)");
    if (interpolation == gridInterpolation)
        return;
    gridInterpolation = interpolation;
    if (gridValues.empty()) {   // zeros (or no grid yet): zero derivatives
        gridNodeDerivatives.clear();
        gridEpoch = nextGridEpoch();
        gridDeposits.clear();
        return;
    }
    vector<double> values = gridValues;
    setGridValues(values);   // "hermite": the spline's node derivatives of the values; "spline": dropped
}

vector<double*> LatentBiasForce::hermiteArrays() {
    size_t total = 1;
    for (const GridDimension& d : gridDims)
        total *= d.size;
    int nmask = 1 << gridDims.size();
    if (gridValues.empty())
        gridValues.assign(total, 0.0);
    if (gridNodeDerivatives.empty())
        gridNodeDerivatives.assign((nmask - 1) * total, 0.0);
    vector<double*> arrays(nmask);
    arrays[0] = gridValues.data();
    for (int mask = 1; mask < nmask; mask++)
        arrays[mask] = gridNodeDerivatives.data() + (mask - 1) * total;
    return arrays;
}

void LatentBiasForce::setGridValues(const vector<double>& values, const vector<double>& nodeDerivatives) {
    if (gridInterpolation != "hermite")
        throw OpenMMException("LatentBiasForce::setGridValues: node derivatives are given only with "
                              "setGridInterpolation(\"hermite\"); call it first (or pass the values alone)");
    if (!values.empty())
        checkGridValues(values);
    else if (gridDims.empty())
        throw OpenMMException("LatentBiasForce: add the grid dimensions before setting grid values");
    size_t total = 1;
    int n[3] = {1, 1, 1};
    for (size_t k = 0; k < gridDims.size(); k++) {
        n[k] = gridDims[k].size;
        total *= n[k];
    }
    int nmask = 1 << gridDims.size();
    if (!nodeDerivatives.empty() && nodeDerivatives.size() != (nmask - 1) * total) {
        stringstream msg;
        msg << "LatentBiasForce::setGridValues: " << nodeDerivatives.size() << " node derivatives were given but a "
            << gridDims.size() << "-D grid of " << total << " points needs " << nmask - 1 << " x " << total << " = "
            << (nmask - 1) * total << " (masks 1 .. " << nmask - 1 << ", each flattened like the values)";
        throw OpenMMException(msg.str());
    }
    for (int mask = 1; mask < nmask && !nodeDerivatives.empty(); mask++) {
        const double* a = nodeDerivatives.data() + (mask - 1) * total;
        for (size_t i = 0; i < total; i++)
            if (!std::isfinite(a[i])) {
                stringstream msg;
                msg << "LatentBiasForce::setGridValues: node derivative " << i << " of mask " << mask
                    << " is not finite (" << a[i] << ")";
                throw OpenMMException(msg.str());
            }
        int k = LatentBiasGrid::periodicPlaneMismatch(a, n, periodicDims());
        if (k >= 0) {
            stringstream msg;
            msg << "LatentBiasForce::setGridValues: grid dimension " << k << " is periodic, so the last grid point of "
                << "node derivative array " << mask << " must repeat the first, but they differ";
            throw OpenMMException(msg.str());
        }
    }
    // empty values / derivatives: zeros (kept empty until a deposit needs them)
    gridValues = values;
    gridNodeDerivatives = nodeDerivatives;
    if (!gridNodeDerivatives.empty() && gridValues.empty())
        gridValues.assign(total, 0.0);
    gridEpoch = nextGridEpoch();
    gridDeposits.clear();
}
