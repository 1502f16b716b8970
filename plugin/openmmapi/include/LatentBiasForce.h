#ifndef LATENTBIAS_FORCE_H_
#define LATENTBIAS_FORCE_H_

/* -------------------------------------------------------------------------- *
 *                         latentbias native plugin                           *
 * -------------------------------------------------------------------------- *
 * A bias on the latent coordinates z of a TorchScript encoder, evaluated with *
 * ONE forward and ONE backward pass through the model per force evaluation.  *
 * -------------------------------------------------------------------------- */

#include "openmm/Context.h"
#include "openmm/Force.h"
#include "internal/windowsExportLatentBias.h"
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace LatentBiasPlugin {

/**
 * A bias on the latent coordinates z = f(x) of an encoder exported as a TorchScript archive (the latentbias model
 * file format: forward(positions (n_atoms, 3) nm, box: Optional[Tensor]) -> z (latent_dim,), metadata JSON as the
 * extra file "latentbias.json").
 *
 * The energy (kJ/mol) is
 *
 *     V(z) = G(z) + W(z) + R(z)
 *
 * - G: a tabulated function of up to three components of z (one per grid dimension), interpolated with OpenMM's
 *   tabulated-function splines (natural cubic splines, periodic cubic splines along periodic dimensions; the same
 *   SplineFitter code as Continuous1D/2D/3DFunction on the Reference platform). Values are flattened with the first
 *   dimension fastest: values[i0 + n0*i1 + n0*n1*i2]; grid points are linspace(min, max, size) inclusive (along a
 *   periodic dimension the last point duplicates the first and must carry the same value). Unlike OpenMM's
 *   tabulated functions, periodicity may differ between dimensions.
 * - W: restoring walls at the edges of non-periodic grid dimensions: outside [min, max] the table is evaluated at
 *   the clamped value and 0.5*kw*(z-max)^2 (or 0.5*kw*(min-z)^2) is added, kw = getWallForceConstant().
 * - R: harmonic restraints, one per restrained component: 0.5*k*(z-z0)^2 (deviation wrapped into half a period
 *   when period > 0) + flat-bottom walls 0.5*kWall*(max(0, z-upper)^2 + max(0, lower-z)^2). The centre z0 and
 *   force constant k are global parameters of the Context (Context::setParameter moves an umbrella window or
 *   steers without reinitialising).
 *
 * Forces: z is computed once, V and dV/dz are computed in double precision, and a single vector-Jacobian product
 * gives dV/dx, whatever the number of biased dimensions. Two evaluation paths (setEvaluationPath): "native" — the
 * plugin's own C++ forward and analytic backward pass built from the model file's native description
 * (latentbias_native.json, written by latentbias.save_model; Reference/CPU platforms), no libtorch per step — and
 * "torch" — the TorchScript code through libtorch (z.backward(dV/dz)); "auto" (default) takes the native path when
 * the model has a description and the platform a native kernel.
 *
 * The model bytes are stored in the force, so it serializes (XmlSerializer) with the model embedded.
 */
class OPENMM_EXPORT_LATENTBIAS LatentBiasForce : public OpenMM::Force {
public:
    /** Largest number of grid dimensions. */
    static const int MaxGridDimensions = 3;
    /** Largest number of grid points (product over dimensions) a grid may have: the spline needs up to 64
     *  coefficients per point in 3-D, so 2^22 points already take ~2 GB. */
    static const long long MaxGridPoints = 1LL << 22;
    /**
     * Create a LatentBiasForce from a model file (TorchScript archive). The file is read once and its bytes are
     * stored in the force. The checksums of a latentbias model file (format 2: SHA-256 of its metadata and of its
     * other archive entries, as latentbias.load_model checks them) are verified before any of its code is loaded.
     *
     * @throws OpenMMException (naming the file) if the file cannot be read, is not a loadable TorchScript archive, or
     *         does not match its checksums (a damaged entry is named)
     */
    explicit LatentBiasForce(const std::string& file);
    /**
     * Create a LatentBiasForce from the bytes of a model file (what getModelData() returns), verified as by the
     * constructor. The caller owns the returned object (in Python, it behaves like any other new Force).
     */
    static LatentBiasForce* fromModelData(const std::string& modelData);
    /** The file the model was read from ("" when created from bytes or deserialized). */
    const std::string& getFile() const {
        return file;
    }
    /** The bytes of the TorchScript archive. */
    const std::string& getModelData() const {
        return modelData;
    }
    /** The JSON text of the archive's "latentbias.json" metadata ("" when absent). */
    const std::string& getMetadata() const {
        return metadata;
    }
    /** Atom count declared by the model metadata (n_atoms), or -1 when the file has no metadata. */
    int getModelNumAtoms() const {
        return modelNumAtoms;
    }
    /**
     * Size of z the model must return (latent_dim from the metadata, or -1 when unknown: then any size larger than
     * the highest biased component is accepted).
     */
    int getModelLatentDim() const {
        return modelLatentDim;
    }
    /** Declare the size of z the model returns (checked at every evaluation). */
    void setModelLatentDim(int latentDim);
    /**
     * Whether the model file carries a native description (latentbias_native.json, written by
     * latentbias.save_model for its own models): then the model can be evaluated without libtorch.
     */
    bool hasNativeDescription() const {
        return nativeDescription;
    }
    /**
     * Choose how the model is evaluated: "native" (the plugin's own C++ forward/backward from the native
     * description, double precision, no libtorch), "torch" (the TorchScript code through libtorch), or "auto"
     * (default: native when the model has a description, torch otherwise). Takes effect in new Contexts.
     *
     * @throws OpenMMException for another value, or "native" when the model has no native description
     */
    void setEvaluationPath(const std::string& path);
    /** The requested evaluation path ("auto", "native" or "torch"). */
    const std::string& getEvaluationPath() const {
        return evaluationPath;
    }
    /** The path "auto" resolves to for this model: "native" or "torch". */
    std::string getResolvedEvaluationPath() const;
    /**
     * The path the kernel in `context` actually uses ("native" or "torch"): with "auto", a platform without a
     * native kernel evaluates described models through libtorch.
     */
    std::string getEvaluationPathInContext(OpenMM::Context& context) const;
    /** Whether the periodic box vectors are passed to the model as its second argument (default false). */
    void setUsesPeriodicBoundaryConditions(bool periodic);
    bool usesPeriodicBoundaryConditions() const override;

    // ------------------------------------------------------------------------------------------------ grid
    /**
     * Add a grid dimension over latent component `component` (grid points linspace(minValue, maxValue, size)).
     *
     * @return the index of the new dimension
     * @throws OpenMMException for a 4th dimension, a component used twice or out of range, size < 2 (< 3 when
     *         periodic), or minValue >= maxValue
     */
    int addGridDimension(int component, double minValue, double maxValue, int size, bool periodic = false);
    int getNumGridDimensions() const {
        return (int) gridDims.size();
    }
    /** Get the parameters of grid dimension `index` (component, minValue, maxValue, size, periodic). */
    void getGridDimensionParameters(int index, int& component, double& minValue, double& maxValue, int& size,
                                    bool& periodic) const;
    /**
     * Set the tabulated values (kJ/mol), flattened with the first dimension fastest. An empty vector means zeros.
     * Call updateParametersInContext() to copy them to an existing Context.
     *
     * @throws OpenMMException if the size is not the product of the grid sizes, a value is not finite, or a periodic
     *         dimension's last plane differs from its first
     */
    void setGridValues(const std::vector<double>& values);
    /**
     * Add a Gaussian, height * prod_k exp(-(x_k - center_k)^2 / (2 width_k^2)), to the tabulated values: a
     * metadynamics deposit. center and width hold one value per grid dimension (units of z; the difference is
     * the minimum image along periodic dimensions, whose last grid point then repeats the first); height in kJ/mol.
     * updateParametersInContext() then updates the Context's interpolant locally (only the Gaussian's support)
     * instead of refitting the whole grid; the result equals setGridValues() of the summed values up to rounding.
     *
     * With cutoff c > 0 each axis factor is truncated at |x_k - center_k| = c width_k and shifted and stretched so
     * that it falls to zero there continuously and keeps its peak value 1: (exp(-u^2/2) - exp(-c^2/2)) /
     * (1 - exp(-c^2/2)) for |u| < c, 0 beyond (u = (x_k - center_k)/width_k), as LatentBiasGrid::gaussianFactor;
     * the Gaussian then changes only the grid points within c widths of its centre along every axis. cutoff = 0:
     * the untruncated Gaussian.
     *
     * @throws OpenMMException if there is no grid, a size differs from the number of grid dimensions, or a value
     *         is not finite (widths must be > 0, the cutoff >= 0)
     */
    void addGridGaussian(const std::vector<double>& center, const std::vector<double>& width, double height,
                         double cutoff = 0.0);
    /** The tabulated values (empty when never set, i.e. zeros). */
    const std::vector<double>& getGridValues() const {
        return gridValues;
    }
    /**
     * How the Context interpolates the table between grid nodes.
     * - "spline" (default): OpenMM's cubic spline through the values (Continuous1D/2D/3DFunction); its node
     *   derivatives come from a global fit, so a deposit changes them along whole axes.
     * - "hermite": the table holds the values AND their node derivatives (d/dz_k, d2/dz_j dz_k, d3/dz0 dz1 dz2), each
     *   cell is the tensor-product cubic Hermite patch through them (C1), no fit. addGridGaussian() and addGridKernel()
     *   add their kernels' exact values and exact analytic derivatives on the kernels' supports only (O(support) work,
     *   in the Force and in every Context), so the interpolant of a sum of kernels is the sum of the kernels'
     *   interpolants. setGridValues(values) takes the spline's node derivatives of the values (the same interpolant
     *   as "spline"); setGridValues(values, nodeDerivatives) gives them explicitly.
     * Switching the mode starts new grid values (a Context made before must be recreated: updateParametersInContext
     * refuses a changed mode); to "hermite" with values set: their spline derivatives; to "spline": the derivatives
     * are dropped.
     *
     * @throws OpenMMException for another name
     */
    void setGridInterpolation(const std::string& interpolation);
    const std::string& getGridInterpolation() const {
        return gridInterpolation;
    }
    /**
     * "hermite" interpolation: set the values and their node derivatives at once. nodeDerivatives holds the 2^d - 1
     * arrays of masks 1 .. 2^d - 1 one after the other (bit k of the mask = d/dz_k: mask 1 = d/dz0, 2 = d/dz1,
     * 3 = d2/dz0dz1, 4 = d/dz2, ..., 7 = d3/dz0dz1dz2), each flattened like the values, in kJ/mol per unit of z along each
     * differentiated dimension; along a periodic dimension the last plane must repeat the first in every array.
     *
     * @throws OpenMMException if the interpolation is not "hermite", a size is wrong, a value is not finite, or a
     *         periodic dimension's last plane differs from its first
     */
    void setGridValues(const std::vector<double>& values, const std::vector<double>& nodeDerivatives);
    /** "hermite" interpolation: the node derivatives (layout of setGridValues; empty when all are zero or with
     *  "spline" interpolation). */
    const std::vector<double>& getGridNodeDerivatives() const {
        return gridNodeDerivatives;
    }
    /** Force constant kw (kJ/mol per unit of z squared) of the walls at the non-periodic grid edges (default 1000). */
    void setWallForceConstant(double k);
    double getWallForceConstant() const {
        return wallForceConstant;
    }
    /**
     * Make the tabulated part of the grid energy proportional to the global parameter `name` (default value
     * `defaultValue`): grid energy = s*table(z) + walls. Context::setParameter(name, s) then scales the acting
     * bias without touching the grid (0 switches it off; the walls stay). An empty name removes the parameter
     * (s = 1).
     */
    void setGridScaleParameter(const std::string& name, double defaultValue = 1.0);
    const std::string& getGridScaleParameter() const {
        return gridScaleParameter;
    }
    double getGridScaleDefaultValue() const {
        return gridScaleDefault;
    }
    /**
     * Evaluate the table through the OPES transform instead of using it as the energy (issue 10 item 6): the table
     * then holds an additive kernel density P (a sum of kernels, see addGridKernel), and the grid energy is
     *
     *     G(z) = s * prefactor * ln(max(P(z), 0) / N + epsilon)   (+ walls),
     *
     * with P(z) the spline of the table, s the grid scale parameter and N the global parameter
     * `normalizationParameter` (default `defaultNormalization`, must stay finite and > 0): OPES' bias
     * V = (alpha/beta) ln(P/Z + epsilon) with prefactor = alpha/beta (kJ/mol) and N = Z. The forces follow by the chain
     * rule, dG/dz = s * prefactor * P'(z) / (P(z) + epsilon N) where P(z) > 0 and 0 where the spline of P is <= 0
     * (there G is flat at s * prefactor * ln(epsilon)). A deposit then changes the table additively and locally
     * (addGridKernel, addGridGaussian) and Z by Context::setParameter, so no deposit refits the whole grid.
     * prefactor and epsilon reach an existing Context with updateParametersInContext(); whether the transform is on
     * and the parameter's name are fixed when the Context is created. An empty `normalizationParameter` switches
     * the transform off (the table is the energy, the default).
     *
     * @throws OpenMMException unless prefactor and epsilon are finite and > 0 and defaultNormalization is finite and
     *         > 0, or if the name is the grid scale parameter or a restraint parameter
     */
    void setGridLogTransform(const std::string& normalizationParameter, double defaultNormalization, double prefactor,
                             double epsilon);
    /** Whether the grid energy is the OPES transform of the table (setGridLogTransform). */
    bool usesGridLogTransform() const {
        return !gridNormalizationParameter.empty();
    }
    const std::string& getGridNormalizationParameter() const {
        return gridNormalizationParameter;
    }
    double getGridNormalizationDefaultValue() const {
        return gridNormalizationDefault;
    }
    double getGridLogPrefactor() const {
        return gridLogPrefactor;
    }
    double getGridLogEpsilon() const {
        return gridLogEpsilon;
    }
    /**
     * Add an OPES kernel to the tabulated values: weight * N_c(x), with N_c the normalised diagonal Gaussian
     * exp(-r^2/2) / prod_k(sqrt(2 pi) width_k), r^2 = sum_k ((x_k - center_k)/width_k)^2 (minimum image along periodic
     * dimensions), truncated spherically at r = cutoff and shifted down by its value there, as PLUMED's OPES_METAD and
     * latentbias.bias.kernels.KernelDensity define it: (exp(-r^2/2) - exp(-cutoff^2/2)) / prod_k(sqrt(2 pi) width_k) for
     * r < cutoff, 0 beyond; cutoff = 0: the untruncated normalised Gaussian. A negative weight removes a kernel (OPES
     * compression). Only the grid points within the cutoff change; updateParametersInContext() then updates the
     * Context's interpolant locally (a truncated kernel is not separable: the spline's node derivatives are updated
     * line by line on the kernel's support, no global refit), with the same result as setGridValues() of the
     * summed values up to rounding.
     *
     * @throws OpenMMException if there is no grid, a size differs from the number of grid dimensions, or a value is
     *         not finite (widths must be > 0, the cutoff >= 0)
     */
    void addGridKernel(const std::vector<double>& center, const std::vector<double>& width, double weight,
                       double cutoff = 0.0);

    // ------------------------------------------------------------------------------------------- restraints
    /**
     * Add a harmonic restraint on latent component `component`:
     * 0.5*k*(z-z0)^2 + 0.5*kWall*(max(0, z-upperWall)^2 + max(0, lowerWall-z)^2), where z0 and k are the global
     * parameters `centerParameter` and `forceConstantParameter` (created with the given defaults; empty names
     * mean "latent_z0_<i>" and "latent_k_<i>", i = index of the restraint). When period > 0 the deviation z-z0 is
     * wrapped into [-period/2, period/2]. The common form takes five arguments; setRestraintPeriod() and
     * setRestraintWalls() set the rest (the trailing arguments here do the same in one call).
     *
     * @return the index of the new restraint
     */
    int addRestraint(int component, const std::string& centerParameter, double defaultCenter,
                     const std::string& forceConstantParameter, double defaultForceConstant, double period = 0.0,
                     double lowerWall = -std::numeric_limits<double>::infinity(),
                     double upperWall = std::numeric_limits<double>::infinity(), double wallForceConstant = 0.0);
    int getNumRestraints() const {
        return (int) restraints.size();
    }
    void getRestraintParameters(int index, int& component, std::string& centerParameter, double& defaultCenter,
                                std::string& forceConstantParameter, double& defaultForceConstant, double& period,
                                double& lowerWall, double& upperWall, double& wallForceConstant) const;
    /** Change a restraint (names, defaults, walls). Takes effect in new Contexts; see updateParametersInContext. */
    void setRestraintParameters(int index, int component, const std::string& centerParameter, double defaultCenter,
                                const std::string& forceConstantParameter, double defaultForceConstant,
                                double period = 0.0, double lowerWall = -std::numeric_limits<double>::infinity(),
                                double upperWall = std::numeric_limits<double>::infinity(),
                                double wallForceConstant = 0.0);
    /** Make restraint `index` periodic in z with this period (0: not periodic). */
    void setRestraintPeriod(int index, double period);
    /**
     * Flat-bottomed walls of restraint `index`: 0.5*wallForceConstant*(max(0, z-upperWall)^2 + max(0, lowerWall-z)^2)
     * (use -inf/inf for no wall on a side).
     */
    void setRestraintWalls(int index, double lowerWall, double upperWall, double wallForceConstant);
    /** Global parameters this force defines (grid scale, grid normalization, then centres and force constants of the
     *  restraints). */
    int getNumGlobalParameters() const;
    const std::string& getGlobalParameterName(int index) const;
    double getGlobalParameterDefaultValue(int index) const;

    // ---------------------------------------------------------------------------------------------- context
    /**
     * Copy the grid values, the wall force constant and the restraint walls/periods to a Context in which this
     * force is used, without reinitialising it (cost grows with the grid, not the system). The grid layout (number
     * of dimensions, components, ranges, sizes, periodicity) and the restraints' components and parameter names
     * must be unchanged. Restraint centres and force constants are Context parameters: use Context::setParameter.
     */
    void updateParametersInContext(OpenMM::Context& context);
    /**
     * The full latent vector z (all model outputs, float64) of the most recent evaluation of this force in
     * `context`, without evaluating the model again. Empty before the first evaluation.
     *
     * Note that an integrator step evaluates forces BEFORE moving the atoms: after Context::step / Integrator::step
     * these are the z of the positions at the start of the last step. isLastEvaluationCurrent() tells whether they
     * belong to the current positions.
     */
    std::vector<double> getLastLatentValues(OpenMM::Context& context) const;
    /**
     * Energies (kJ/mol) of the most recent evaluation: {grid + edge walls, restraints}. Their sum is this force's
     * energy. Empty before the first evaluation.
     */
    std::vector<double> getLastEnergies(OpenMM::Context& context) const;
    /**
     * Whether the last evaluation used exactly the current positions, box, restraint parameters and grid (then
     * getLastLatentValues()/getLastEnergies() describe the current state). Platforms that cannot check cheaply
     * (CUDA) return false.
     */
    bool isLastEvaluationCurrent(OpenMM::Context& context) const;

    // ------------------------------------------------------------------------------------------- internals
    struct GridDimension {
        int component;
        double minValue, maxValue;
        int size;
        bool periodic;
    };
    struct Restraint {
        int component;
        std::string centerParameter, forceConstantParameter;
        double defaultCenter, defaultForceConstant;
        double period, lowerWall, upperWall, wallForceConstant;
    };
    const std::vector<GridDimension>& getGridDimensions() const {
        return gridDims;
    }
    const std::vector<Restraint>& getRestraints() const {
        return restraints;
    }
    /** Throw OpenMMException unless `values` fit the current grid (size, finite, periodic planes equal). */
    void checkGridValues(const std::vector<double>& values) const;
    /** Whether each grid dimension is periodic, in the order added. */
    std::vector<bool> periodicDims() const;
    /** A Gaussian added by addGridGaussian(). */
    struct GridDeposit {
        std::vector<double> center, width;
        double height;
        double cutoff;   // in widths; 0: untruncated
        /** false: a metadynamics Gaussian (addGridGaussian, height = peak); true: an OPES kernel (addGridKernel,
         *  height = weight of the normalised, spherically truncated and shifted kernel) */
        bool densityKernel = false;
    };
    /**
     * Identifies the grid values set last by setGridValues() (or a layout change): unique across Force objects.
     * The Gaussians added since then are getGridDeposits(), so a Context that holds this epoch and the first n
     * deposits can catch up by adding the rest.
     */
    long long getGridValuesEpoch() const {
        return gridEpoch;
    }
    const std::vector<GridDeposit>& getGridDeposits() const {
        return gridDeposits;
    }
    /** Longest deposit log kept; the next deposit starts a new epoch (Contexts then refit once). */
    static const int MaxLoggedDeposits = 100000;

protected:
    OpenMM::ForceImpl* createImpl() const override;

private:
    LatentBiasForce();
    void setModelData(const std::string& data);
    void checkComponent(int component) const;
    std::vector<std::pair<std::string, double> > getGlobalParameters() const;
    std::string file, modelData, metadata, evaluationPath;
    int modelNumAtoms, modelLatentDim;
    bool nativeDescription;
    bool usePeriodic;
    std::vector<GridDimension> gridDims;
    std::vector<double> gridValues;
    std::string gridInterpolation = "spline";
    std::vector<double> gridNodeDerivatives;   // "hermite": masks 1 .. 2^d - 1 (empty: zeros)
    /** "hermite": allocate zero values and derivatives if empty; the 2^d array pointers (values first). */
    std::vector<double*> hermiteArrays();
    static long long nextGridEpoch();
    long long gridEpoch = nextGridEpoch();
    std::vector<GridDeposit> gridDeposits;
    double wallForceConstant;
    std::string gridScaleParameter;
    double gridScaleDefault;
    std::string gridNormalizationParameter;
    double gridNormalizationDefault = 1.0, gridLogPrefactor = 1.0, gridLogEpsilon = 1.0;
    std::vector<Restraint> restraints;
};

} // namespace LatentBiasPlugin

#endif /*LATENTBIAS_FORCE_H_*/
