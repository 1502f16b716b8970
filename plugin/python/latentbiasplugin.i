/*
 * Python wrapper of the LatentBiasForce plugin. Built into latentbias/_native/ and loaded by latentbias.native.
 * The OpenMM classes are imported from the `openmm` package's own SWIG module, so a LatentBiasForce is an
 * openmm.Force (System.addForce, XmlSerializer, force groups all work).
 */
%module(package="latentbias._native") latentbiasplugin

/* OpenMM's typemaps.i converts numpy arrays directly; it expects isNumpyAvailable() and the numpy C API. */
%header %{
#include <numpy/arrayobject.h>
static bool isNumpyAvailable() {
    static int available = -1;
    if (available < 0) {
        available = (_import_array() >= 0) ? 1 : 0;
        if (!available)
            PyErr_Clear();
    }
    return available == 1;
}
%}

%import(module="openmm") "swig/OpenMMSwigHeaders.i"
%include "swig/typemaps.i"
%include <std_string.i>

%{
#include "LatentBiasForce.h"
#include "OpenMM.h"
#include "OpenMMAmoeba.h"
#include "OpenMMDrude.h"
#include "openmm/RPMDIntegrator.h"
#include "openmm/RPMDMonteCarloBarostat.h"
#include <limits>
%}

/* C++ exceptions become openmm.OpenMMException (an Exception subclass), never a crash. */
%exception {
    try {
        $action
    } catch (std::exception& e) {
        PyObject* module = PyImport_ImportModule("openmm");
        PyObject* cls = module ? PyObject_GetAttrString(module, "OpenMMException") : NULL;
        if (cls == NULL)
            PyErr_Clear();
        PyErr_SetString(cls ? cls : PyExc_Exception, e.what());
        Py_XDECREF(cls);
        Py_XDECREF(module);
        SWIG_fail;
    }
}

/* Model bytes: accept bytes, bytearray or memoryview (binary data must not go through str). */
%typemap(in) std::string modelData {
    Py_buffer view;
    if (PyObject_GetBuffer($input, &view, PyBUF_SIMPLE) != 0) {
        PyErr_Clear();
        SWIG_exception_fail(SWIG_TypeError, "modelData must be bytes (the contents of a model file)");
    }
    $1 = std::string((const char*) view.buf, view.len);
    PyBuffer_Release(&view);
}

%typemap(out) std::vector<double> {
    $result = PyList_New($1.size());
    for (size_t i = 0; i < $1.size(); i++)
        PyList_SET_ITEM($result, i, PyFloat_FromDouble($1[i]));
}

%typemap(out) const std::vector<double>& {
    $result = PyList_New($1->size());
    for (size_t i = 0; i < $1->size(); i++)
        PyList_SET_ITEM($result, i, PyFloat_FromDouble((*$1)[i]));
}

/* Accept path-like objects for the model file. */
%pythonprepend LatentBiasPlugin::LatentBiasForce::LatentBiasForce(const std::string& file) %{
    import os
    file = os.fspath(file)
%}

namespace LatentBiasPlugin {

%feature("docstring") LatentBiasForce "Bias on the latent coordinates z of a TorchScript encoder: tabulated grid
(OpenMM splines) + edge walls + harmonic restraints with centres/force constants as global parameters. One forward
and one backward pass through the model per evaluation. See plugin/README.md.";

class LatentBiasForce : public OpenMM::Force {
public:
    LatentBiasForce(const std::string& file);
    %newobject fromModelData;
    static LatentBiasForce* fromModelData(std::string modelData);
    const std::string& getFile() const;
    const std::string& getMetadata() const;
    int getModelNumAtoms() const;
    int getModelLatentDim() const;
    void setModelLatentDim(int latentDim);
    bool hasNativeDescription() const;
    void setEvaluationPath(const std::string& path);
    const std::string& getEvaluationPath() const;
    std::string getResolvedEvaluationPath() const;
    std::string getEvaluationPathInContext(OpenMM::Context& context) const;
    void setUsesPeriodicBoundaryConditions(bool periodic);
    bool usesPeriodicBoundaryConditions() const;

    int addGridDimension(int component, double minValue, double maxValue, int size, bool periodic=false);
    int getNumGridDimensions() const;
    void setGridValues(const std::vector<double>& values);
    void addGridGaussian(const std::vector<double>& center, const std::vector<double>& width, double height,
                         double cutoff=0.0);
    const std::vector<double>& getGridValues() const;
    void setGridInterpolation(const std::string& interpolation);
    const std::string& getGridInterpolation() const;
    void setGridValues(const std::vector<double>& values, const std::vector<double>& nodeDerivatives);
    const std::vector<double>& getGridNodeDerivatives() const;
    void setWallForceConstant(double k);
    double getWallForceConstant() const;
    void setGridScaleParameter(const std::string& name, double defaultValue=1.0);
    const std::string& getGridScaleParameter() const;
    double getGridScaleDefaultValue() const;
    void setGridLogTransform(const std::string& normalizationParameter, double defaultNormalization,
                             double prefactor, double epsilon);
    bool usesGridLogTransform() const;
    const std::string& getGridNormalizationParameter() const;
    double getGridNormalizationDefaultValue() const;
    double getGridLogPrefactor() const;
    double getGridLogEpsilon() const;
    void addGridKernel(const std::vector<double>& center, const std::vector<double>& width, double weight,
                       double cutoff=0.0);

    int addRestraint(int component, const std::string& centerParameter, double defaultCenter,
                     const std::string& forceConstantParameter, double defaultForceConstant, double period=0.0,
                     double lowerWall=-std::numeric_limits<double>::infinity(),
                     double upperWall=std::numeric_limits<double>::infinity(), double wallForceConstant=0.0);
    int getNumRestraints() const;
    void setRestraintPeriod(int index, double period);
    void setRestraintWalls(int index, double lowerWall, double upperWall, double wallForceConstant);
    void setRestraintParameters(int index, int component, const std::string& centerParameter, double defaultCenter,
                                const std::string& forceConstantParameter, double defaultForceConstant,
                                double period=0.0, double lowerWall=-std::numeric_limits<double>::infinity(),
                                double upperWall=std::numeric_limits<double>::infinity(),
                                double wallForceConstant=0.0);
    int getNumGlobalParameters() const;
    const std::string& getGlobalParameterName(int index) const;
    double getGlobalParameterDefaultValue(int index) const;

    void updateParametersInContext(OpenMM::Context& context);
    std::vector<double> getLastLatentValues(OpenMM::Context& context) const;
    std::vector<double> getLastEnergies(OpenMM::Context& context) const;
    bool isLastEvaluationCurrent(OpenMM::Context& context) const;

    %extend {
        /** The bytes of the TorchScript archive. */
        PyObject* getModelData() const {
            const std::string& data = $self->getModelData();
            return PyBytes_FromStringAndSize(data.data(), data.size());
        }
        /** (component, minValue, maxValue, size, periodic) of grid dimension index. */
        PyObject* getGridDimensionParameters(int index) const {
            int component, size;
            double minValue, maxValue;
            bool periodic;
            $self->getGridDimensionParameters(index, component, minValue, maxValue, size, periodic);
            return Py_BuildValue("(iddiO)", component, minValue, maxValue, size, periodic ? Py_True : Py_False);
        }
        /** (component, centerParameter, defaultCenter, forceConstantParameter, defaultForceConstant, period,
            lowerWall, upperWall, wallForceConstant) of restraint index. */
        PyObject* getRestraintParameters(int index) const {
            int component;
            std::string centerName, kName;
            double center, k, period, lower, upper, wallK;
            $self->getRestraintParameters(index, component, centerName, center, kName, k, period, lower, upper, wallK);
            return Py_BuildValue("(isdsddddd)", component, centerName.c_str(), center, kName.c_str(), k, period,
                                 lower, upper, wallK);
        }
        static LatentBiasPlugin::LatentBiasForce& cast(OpenMM::Force& force) {
            LatentBiasPlugin::LatentBiasForce* f = dynamic_cast<LatentBiasPlugin::LatentBiasForce*>(&force);
            if (f == NULL)
                throw OpenMM::OpenMMException("the Force is not a LatentBiasForce");
            return *f;
        }
        static bool isinstance(OpenMM::Force& force) {
            return (dynamic_cast<LatentBiasPlugin::LatentBiasForce*>(&force) != NULL);
        }
    }
};

}
