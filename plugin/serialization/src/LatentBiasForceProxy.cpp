#include "LatentBiasForceProxy.h"
#include "LatentBiasForce.h"
#include "internal/LatentBiasUtilities.h"
#include "openmm/OpenMMException.h"
#include "openmm/serialization/SerializationNode.h"
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <iostream>
#include <sstream>

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

// Doubles are written as text with 17 significant digits (exact round trip; "inf"/"-inf" for open walls).
static string formatDouble(double x) {
    char buffer[40];
    snprintf(buffer, sizeof(buffer), "%.17g", x);
    return buffer;
}

static double parseDouble(const string& text) {
    const char* begin = text.c_str();
    char* end = nullptr;
    double x = strtod(begin, &end);
    if (end == begin)
        throw OpenMMException("LatentBiasForce: invalid number '" + text + "' in the serialized force");
    return x;
}

LatentBiasForceProxy::LatentBiasForceProxy() : SerializationProxy("LatentBiasForce") {
}

/** The text the log transform's checksum covers (version 3): its four settings, each exactly. */
static string logTransformText(const string& name, const string& normalization, const string& prefactor,
                               const string& epsilon) {
    return name + "\n" + normalization + "\n" + prefactor + "\n" + epsilon;
}

void LatentBiasForceProxy::serialize(const void* object, SerializationNode& node) const {
    const LatentBiasForce& force = *reinterpret_cast<const LatentBiasForce*>(object);
    // Version 3 adds the grid's log transform (OPES); a force without one is written as version 2, which plugins
    // older than the transform still read.
    // Version 4 adds the Hermite table (setGridInterpolation("hermite"): node derivatives); a force without one is
    // written as before (3 with the log transform, else 2), which older plugins still read.
    bool hermite = force.getGridInterpolation() == "hermite";
    node.setIntProperty("version", hermite ? 4 : (force.usesGridLogTransform() ? 3 : 2));
    node.setIntProperty("forceGroup", force.getForceGroup());
    node.setStringProperty("name", force.getName());
    node.setBoolProperty("usesPeriodic", force.usesPeriodicBoundaryConditions());
    node.setStringProperty("evaluationPath", force.getEvaluationPath());
    node.setIntProperty("latentDim", force.getModelLatentDim());
    node.setStringProperty("wallForceConstant", formatDouble(force.getWallForceConstant()));
    node.setStringProperty("gridScaleParameter", force.getGridScaleParameter());
    node.setStringProperty("gridScaleDefault", formatDouble(force.getGridScaleDefaultValue()));
    node.setStringProperty("model", base64Encode(force.getModelData()));
    node.setStringProperty("modelChecksum", checksum64(force.getModelData()));
    SerializationNode& grid = node.createChildNode("Grid");
    for (int i = 0; i < force.getNumGridDimensions(); i++) {
        int component, size;
        double minValue, maxValue;
        bool periodic;
        force.getGridDimensionParameters(i, component, minValue, maxValue, size, periodic);
        grid.createChildNode("Dimension")
            .setIntProperty("component", component)
            .setStringProperty("min", formatDouble(minValue))
            .setStringProperty("max", formatDouble(maxValue))
            .setIntProperty("size", size)
            .setBoolProperty("periodic", periodic);
    }
    stringstream values;
    const vector<double>& v = force.getGridValues();
    for (size_t i = 0; i < v.size(); i++)
        values << (i > 0 ? " " : "") << formatDouble(v[i]);
    grid.setIntProperty("numValues", v.size());
    grid.setStringProperty("values", values.str());
    grid.setStringProperty("valuesChecksum", checksum64(values.str()));
    if (hermite) {
        stringstream derivs;
        const vector<double>& g = force.getGridNodeDerivatives();
        for (size_t i = 0; i < g.size(); i++)
            derivs << (i > 0 ? " " : "") << formatDouble(g[i]);
        grid.createChildNode("NodeDerivatives")
            .setStringProperty("interpolation", "hermite")
            .setIntProperty("numValues", g.size())
            .setStringProperty("values", derivs.str())
            .setStringProperty("checksum", checksum64("hermite\n" + derivs.str()));
    }
    if (force.usesGridLogTransform()) {
        string name = force.getGridNormalizationParameter();
        string normalization = formatDouble(force.getGridNormalizationDefaultValue());
        string prefactor = formatDouble(force.getGridLogPrefactor()), epsilon = formatDouble(force.getGridLogEpsilon());
        grid.createChildNode("LogTransform")
            .setStringProperty("normalizationParameter", name)
            .setStringProperty("defaultNormalization", normalization)
            .setStringProperty("prefactor", prefactor)
            .setStringProperty("epsilon", epsilon)
            .setStringProperty("checksum", checksum64(logTransformText(name, normalization, prefactor, epsilon)));
    }
    SerializationNode& restraints = node.createChildNode("Restraints");
    for (int i = 0; i < force.getNumRestraints(); i++) {
        int component;
        string centerName, kName;
        double center, k, period, lower, upper, wallK;
        force.getRestraintParameters(i, component, centerName, center, kName, k, period, lower, upper, wallK);
        restraints.createChildNode("Restraint")
            .setIntProperty("component", component)
            .setStringProperty("centerParameter", centerName)
            .setStringProperty("defaultCenter", formatDouble(center))
            .setStringProperty("forceConstantParameter", kName)
            .setStringProperty("defaultForceConstant", formatDouble(k))
            .setStringProperty("period", formatDouble(period))
            .setStringProperty("lowerWall", formatDouble(lower))
            .setStringProperty("upperWall", formatDouble(upper))
            .setStringProperty("wallForceConstant", formatDouble(wallK));
    }
}

void* LatentBiasForceProxy::deserialize(const SerializationNode& node) const {
    int version = node.getIntProperty("version");
    if (version < 1 || version > 4)
        throw OpenMMException("LatentBiasForce: unsupported serialization version " + to_string(version) +
                              " (this plugin reads 1 to 4); update latentbias");
    // The log transform (OPES) exists from version 3 on: an older version holding one was edited (its checksum
    // would be skipped and the energy changed from a log of the table to the table itself), so it is refused.
    const SerializationNode* logTransform = nullptr;
    const SerializationNode* nodeDerivatives = nullptr;
    for (const SerializationNode& child : node.getChildren())
        if (child.getName() == "Grid")
            for (const SerializationNode& g : child.getChildren()) {
                if (g.getName() == "LogTransform")
                    logTransform = &g;
                if (g.getName() == "NodeDerivatives")
                    nodeDerivatives = &g;
            }
    if (nodeDerivatives != nullptr && version < 4)
        throw OpenMMException("LatentBiasForce: the serialized force says version " + to_string(version) + " but its "
                              "grid holds NodeDerivatives (a Hermite table), which only version 4 writes: its version "
                              "was edited, so it is not trusted; serialize the force again with this plugin");
    if (logTransform != nullptr && version < 3)
        throw OpenMMException("LatentBiasForce: the serialized force says version " + to_string(version) + " but its "
                              "grid holds a LogTransform, which only version 3 writes: its version was edited, so it "
                              "is not trusted; serialize the force again with this plugin");
    string model = base64Decode(node.getStringProperty("model"));
    // Version 2 carries checksums of the model and the grid values: a corrupted or edited file must not silently
    // change the physics. Version 1 files (no checksums) are still read, with a warning; a "version 1" force that
    // holds the checksums was written as version 2 and edited (which would skip both checks): it is refused.
    if (version == 1) {
        bool gridChecksum = false;
        for (const SerializationNode& child : node.getChildren())
            if (child.getName() == "Grid" && child.hasProperty("valuesChecksum"))
                gridChecksum = true;
        if (node.hasProperty("modelChecksum") || gridChecksum)
            throw OpenMMException("LatentBiasForce: the serialized force says version 1, which carries no checksums, "
                                  "but it holds them (modelChecksum / valuesChecksum): its version was edited (a "
                                  "version-1 file never held them), so it is not trusted; rebuild the force from the "
                                  "original model file and serialize it again");
        cerr << "LatentBiasForce: WARNING: a serialized force of version 1 carries no checksums, so its model and grid "
                "values are loaded unverified: a damaged or edited file would go unnoticed. Serialize the force again "
                "with this plugin (XmlSerializer.serialize) to add them." << endl;
    }
    if (version >= 2 && checksum64(model) != node.getStringProperty("modelChecksum", ""))
        throw OpenMMException("LatentBiasForce: the serialized force's model does not match its checksum (the file "
                              "is corrupt or was edited); rebuild the force from the original model file");
    unique_ptr<LatentBiasForce> force;
    try {
        force.reset(LatentBiasForce::fromModelData(model));  // verifies the model's own checksums too
    }
    catch (const OpenMMException& e) {
        string what = e.what();
        const string prefix = "LatentBiasForce: ";
        if (what.compare(0, prefix.size(), prefix) == 0)
            what = what.substr(prefix.size());
        throw OpenMMException("LatentBiasForce (serialized force): " + what);
    }
    force->setForceGroup(node.getIntProperty("forceGroup", 0));
    force->setName(node.getStringProperty("name", force->getName()));
    force->setUsesPeriodicBoundaryConditions(node.getBoolProperty("usesPeriodic", false));
    force->setEvaluationPath(node.getStringProperty("evaluationPath", "auto"));
    int latentDim = node.getIntProperty("latentDim", -1);
    if (latentDim > 0 && latentDim != force->getModelLatentDim())
        force->setModelLatentDim(latentDim);
    force->setWallForceConstant(parseDouble(node.getStringProperty("wallForceConstant")));
    force->setGridScaleParameter(node.getStringProperty("gridScaleParameter", ""),
                                 parseDouble(node.getStringProperty("gridScaleDefault", "1")));
    const SerializationNode& grid = node.getChildNode("Grid");
    for (const SerializationNode& d : grid.getChildren()) {
        if (d.getName() != "Dimension")
            continue;
        force->addGridDimension(d.getIntProperty("component"), parseDouble(d.getStringProperty("min")),
                                parseDouble(d.getStringProperty("max")), d.getIntProperty("size"),
                                d.getBoolProperty("periodic"));
    }
    if (logTransform != nullptr) {
        const SerializationNode& t = *logTransform;
        string name = t.getStringProperty("normalizationParameter");
        string normalization = t.getStringProperty("defaultNormalization");
        string prefactor = t.getStringProperty("prefactor"), epsilon = t.getStringProperty("epsilon");
        if (checksum64(logTransformText(name, normalization, prefactor, epsilon)) != t.getStringProperty("checksum", ""))
            throw OpenMMException("LatentBiasForce: the serialized grid log transform does not match its checksum "
                                  "(the file is corrupt or was edited); serialize the force again");
        if (name.empty())
            throw OpenMMException("LatentBiasForce: the serialized grid log transform has no normalization parameter");
        force->setGridLogTransform(name, parseDouble(normalization), parseDouble(prefactor), parseDouble(epsilon));
    }
    int numValues = grid.getIntProperty("numValues", 0);
    if (numValues < 0 || numValues > LatentBiasForce::MaxGridPoints)
        throw OpenMMException("LatentBiasForce: invalid number of grid values " + to_string(numValues) +
                              " in the serialized force");
    if (version >= 2 && numValues > 0 &&
            checksum64(grid.getStringProperty("values")) != grid.getStringProperty("valuesChecksum", ""))
        throw OpenMMException("LatentBiasForce: the serialized grid values do not match their checksum (the file is "
                              "corrupt or was edited); save the bias state again");
    vector<double> parsedValues;
    if (numValues > 0) {
        vector<double> values;
        values.reserve(numValues);
        const string& text = grid.getStringProperty("values");
        const char* p = text.c_str();
        for (int i = 0; i < numValues; i++) {
            char* end = nullptr;
            double x = strtod(p, &end);
            if (end == p)
                throw OpenMMException("LatentBiasForce: truncated grid values in the serialized force");
            values.push_back(x);
            p = end;
        }
        if (nodeDerivatives == nullptr)
            force->setGridValues(values);
        else
            force->setGridInterpolation("hermite");   // the values and derivatives are set below
        parsedValues.swap(values);
    }
    if (nodeDerivatives != nullptr) {
        const SerializationNode& t = *nodeDerivatives;
        string text = t.getStringProperty("values", "");
        if (t.getStringProperty("interpolation", "") != "hermite" ||
                checksum64("hermite\n" + text) != t.getStringProperty("checksum", ""))
            throw OpenMMException("LatentBiasForce: the serialized grid node derivatives do not match their checksum "
                                  "(the file is corrupt or was edited); serialize the force again");
        long long count = t.getIntProperty("numValues", 0);
        if (count < 0 || count > 7LL * LatentBiasForce::MaxGridPoints)
            throw OpenMMException("LatentBiasForce: invalid number of grid node derivatives in the serialized force");
        vector<double> derivs;
        derivs.reserve(count);
        const char* p = text.c_str();
        for (long long i = 0; i < count; i++) {
            char* end = nullptr;
            double x = strtod(p, &end);
            if (end == p)
                throw OpenMMException("LatentBiasForce: truncated grid node derivatives in the serialized force");
            derivs.push_back(x);
            p = end;
        }
        force->setGridInterpolation("hermite");
        force->setGridValues(parsedValues, derivs);
    }
    const SerializationNode& restraints = node.getChildNode("Restraints");
    for (const SerializationNode& r : restraints.getChildren())
        force->addRestraint(r.getIntProperty("component"), r.getStringProperty("centerParameter"),
                            parseDouble(r.getStringProperty("defaultCenter")), r.getStringProperty("forceConstantParameter"),
                            parseDouble(r.getStringProperty("defaultForceConstant")),
                            parseDouble(r.getStringProperty("period")), parseDouble(r.getStringProperty("lowerWall")),
                            parseDouble(r.getStringProperty("upperWall")),
                            parseDouble(r.getStringProperty("wallForceConstant")));
    return force.release();
}
