#ifndef LATENTBIAS_EVALUATOR_H_
#define LATENTBIAS_EVALUATOR_H_

#include "LatentBiasForce.h"
#include "internal/LatentBiasGrid.h"
#include "internal/windowsExportLatentBias.h"
#include <string>
#include <vector>

namespace OpenMM {
class ContextImpl;
}

namespace LatentBiasPlugin {

/**
 * The bias as a function of the latent vector z, in double precision, independent of any platform:
 * grid (+ edge walls) and restraints, their energies and dV/dz. Every platform's kernel uses it.
 */
class OPENMM_EXPORT_LATENTBIAS LatentBiasEvaluator {
public:
    LatentBiasEvaluator();
    /** Set up from a force (builds the spline; throws OpenMMException for invalid grid values). */
    void initialize(const LatentBiasForce& force);
    /** Copy grid values, wall constants and restraint walls/periods; the layout must be unchanged. */
    void updateParameters(const LatentBiasForce& force);
    /** Size z must have (-1: unknown) and the smallest size that contains every biased component. */
    int getExpectedLatentDim() const {
        return expectedLatentDim;
    }
    int getMinimumLatentDim() const {
        return minimumLatentDim;
    }
    /** Throw OpenMMException unless a model output of `size` elements fits. */
    void checkLatentSize(long long size) const;
    /** Read the parameters (restraint centres and force constants, then the grid scale, then the grid
     *  normalization of the log transform, 1 without one) from the Context: 2 * restraints + 2 values. */
    void readParameters(OpenMM::ContextImpl& context, std::vector<double>& params) const;
    /**
     * Energies of latent point z (size = model output size) with restraint parameters params (from readParameters).
     * dVdz (resized to the size of z) receives dV/dz. Throws OpenMMException if z is not finite.
     */
    void evaluate(const double* z, int size, const std::vector<double>& params, double& gridEnergy,
                  double& restraintEnergy, std::vector<double>& dVdz) const;
    /** Throw OpenMMException naming the parameter if a restraint centre/force constant or the scale is invalid. */
    void checkParameters(const std::vector<double>& params) const;
    /** Latent components that the grid or a restraint acts on (sorted, unique). */
    std::vector<int> getBiasedComponents() const;
    /**
     * Throw OpenMMException naming the atoms if dV/dx (3*numParticles values, x fastest) or the energy is not
     * finite: a NaN/inf force must never reach the integrator silently.
     */
    static void checkFinite(const double* dVdx, int numParticles, double energy);
    /**
     * The bias in the flat form a device kernel evaluates (common-compute platforms): grid dimensions, the grid as
     * the node derivatives of its per-axis Hermite construction (LatentBiasGrid::getNodeDerivatives; equal to
     * OpenMM's spline patches), walls and restraints. Restraint centres/force constants and the grid scale stay
     * Context parameters (readParameters).
     */
    struct DeviceBias {
        std::vector<int> dimInts;          // per grid dimension: component, periodic, size, first point in `points`
        std::vector<double> dimRange;      // per grid dimension: min, max
        std::vector<double> points;        // grid points, axis after axis
        std::vector<double> nodeDerivatives;  // 2^d blocks of (number of grid points) values, block = mask
        double wallForceConstant = 0.0;
        /** the OPES transform of the grid (LatentBiasForce::setGridLogTransform); its normalization is the last
         *  Context parameter (readParameters) */
        bool logTransform = false;
        /** with logTransform: the table is a Hermite table of S and the kernel interpolates V from V's node values
         *  and derivatives (LatentBiasGrid::evaluateLogHermite) instead of taking the log of the interpolated S */
        bool logNodes = false;
        double logPrefactor = 1.0, logEpsilon = 1.0;
        std::vector<int> restraintComponents;
        std::vector<double> restraintReals;  // per restraint: period, lowerWall, upperWall, wallForceConstant
    };
    /** Fill `bias` from the current grid values, walls and restraints. */
    void getDeviceBias(DeviceBias& bias) const;
    int getNumRestraints() const {
        return (int) restraints.size();
    }
    /** Incremented by every updateParameters(). */
    long long getVersion() const {
        return version;
    }

private:
    std::vector<LatentBiasForce::GridDimension> dims;
    std::vector<LatentBiasForce::Restraint> restraints;
    LatentBiasGrid grid;
    bool hasGrid;
    bool gridHermite = false;          // LatentBiasForce::getGridInterpolation() == "hermite" (fixed per Context)
    long long gridEpoch = -1;          // LatentBiasForce::getGridValuesEpoch() of the values in `grid`
    size_t gridDepositsApplied = 0;    // ... and how many of that epoch's deposits `grid` holds
    double wallForceConstant;
    std::string gridScaleParameter;
    std::string gridNormalizationParameter;   // empty: no log transform
    double logPrefactor = 1.0, logEpsilon = 1.0;
    int expectedLatentDim, minimumLatentDim;
    long long version;
};

} // namespace LatentBiasPlugin

#endif
