/*
 * XmlSerializer round trips of a LatentBiasForce (model bytes embedded as base64) alone and inside a System.
 */
#include "TestUtilities.h"
#include "internal/LatentBiasUtilities.h"
#include "openmm/serialization/XmlSerializer.h"
#include <limits>
#include <sstream>

using namespace LatentBiasPlugin;
using namespace LatentBiasTest;
using namespace std;

static LatentBiasForce* makeForce() {
    LatentBiasForce* force = new LatentBiasForce(modelPath("model_d3.pt"));
    force->addGridDimension(1, -2.0, 1.5, 7, false);
    force->addGridDimension(0, -1.0, 1.0, 5, true);
    vector<double> values(35);
    for (int i = 0; i < 35; i++)
        values[i] = sin(0.37 * i) * 3.1;
    for (int j = 0; j < 7; j++)
        values[j + 7 * 4] = values[j];   // periodic dimension 1: last plane = first plane
    force->setGridValues(values);
    force->setWallForceConstant(321.5);
    force->setGridScaleParameter("scale_5", 0.75);
    force->addRestraint(2, "", 0.123456789012345, "", 77.0);
    force->addRestraint(1, "c1", -0.5, "k1", 12.5, 0.0, -1.25, numeric_limits<double>::infinity(), 40.0);
    force->setForceGroup(5);
    force->setName("my latent bias");
    force->setUsesPeriodicBoundaryConditions(false);
    return force;
}

static void compareForces(const LatentBiasForce& a, const LatentBiasForce& b) {
    ASSERT(a.getModelData() == b.getModelData());
    ASSERT_EQUAL(a.getMetadata(), b.getMetadata());
    ASSERT_EQUAL(a.getModelLatentDim(), b.getModelLatentDim());
    ASSERT_EQUAL(a.getModelNumAtoms(), b.getModelNumAtoms());
    ASSERT_EQUAL(a.getForceGroup(), b.getForceGroup());
    ASSERT_EQUAL(a.getName(), b.getName());
    ASSERT_EQUAL(a.usesPeriodicBoundaryConditions(), b.usesPeriodicBoundaryConditions());
    ASSERT_EQUAL(a.getWallForceConstant(), b.getWallForceConstant());
    ASSERT_EQUAL(a.getGridScaleParameter(), b.getGridScaleParameter());
    ASSERT_EQUAL(a.getGridScaleDefaultValue(), b.getGridScaleDefaultValue());
    ASSERT_EQUAL(a.getNumGridDimensions(), b.getNumGridDimensions());
    for (int i = 0; i < a.getNumGridDimensions(); i++) {
        int c1, c2, s1, s2;
        double lo1, lo2, hi1, hi2;
        bool p1, p2;
        a.getGridDimensionParameters(i, c1, lo1, hi1, s1, p1);
        b.getGridDimensionParameters(i, c2, lo2, hi2, s2, p2);
        ASSERT(c1 == c2 && lo1 == lo2 && hi1 == hi2 && s1 == s2 && p1 == p2);
    }
    ASSERT(a.getGridValues() == b.getGridValues());   // bit-exact
    ASSERT_EQUAL(a.getNumRestraints(), b.getNumRestraints());
    for (int i = 0; i < a.getNumRestraints(); i++) {
        int c1, c2;
        string n1, n2, m1, m2;
        double x1[7], x2[7];
        a.getRestraintParameters(i, c1, n1, x1[0], m1, x1[1], x1[2], x1[3], x1[4], x1[5]);
        b.getRestraintParameters(i, c2, n2, x2[0], m2, x2[1], x2[2], x2[3], x2[4], x2[5]);
        ASSERT(c1 == c2 && n1 == n2 && m1 == m2);
        for (int j = 0; j < 6; j++)
            ASSERT_EQUAL(x1[j], x2[j]);
    }
}

static void testBase64() {
    for (string s : {string(""), string("a"), string("ab"), string("abc"), string("abcd"), string("\0\xff\x10zz", 5)}) {
        ASSERT(base64Decode(base64Encode(s)) == s);
    }
    ASSERT_EQUAL(string("aGVsbG8="), base64Encode("hello"));
}

static void testForceRoundTrip() {
    LatentBiasForce* force = makeForce();
    stringstream buffer;
    XmlSerializer::serialize<LatentBiasForce>(force, "Force", buffer);
    LatentBiasForce* copy = XmlSerializer::deserialize<LatentBiasForce>(buffer);
    compareForces(*force, *copy);
    delete force;
    delete copy;
}

static void testSystemRoundTrip() {
    System* system = makeSystem(5);
    system->addForce(makeForce());
    stringstream buffer;
    XmlSerializer::serialize<System>(system, "System", buffer);
    System* copy = XmlSerializer::deserialize<System>(buffer);
    ASSERT_EQUAL(1, copy->getNumForces());
    LatentBiasForce* restored = dynamic_cast<LatentBiasForce*>(&copy->getForce(0));
    ASSERT(restored != nullptr);
    compareForces(dynamic_cast<LatentBiasForce&>(system->getForce(0)), *restored);
    // the same energies and forces in both Contexts
    vector<Vec3> pos = testPositions();
    VerletIntegrator i1(0.001), i2(0.001);
    Context c1(*system, i1, Platform::getPlatformByName("Reference"));
    Context c2(*copy, i2, Platform::getPlatformByName("Reference"));
    c1.setPositions(pos);
    c2.setPositions(pos);
    c1.setParameter("c1", 0.25);
    c2.setParameter("c1", 0.25);
    State s1 = c1.getState(State::Energy | State::Forces);
    State s2 = c2.getState(State::Energy | State::Forces);
    ASSERT_EQUAL(s1.getPotentialEnergy(), s2.getPotentialEnergy());
    for (int i = 0; i < 5; i++)
        ASSERT_EQUAL_VEC(s1.getForces()[i], s2.getForces()[i], 1e-14);
    delete system;
    delete copy;
}

int main(int argc, char* argv[]) {
    initPlatforms();
    return runTests(argc, argv, {
        {"base64", testBase64},
        {"force round trip", testForceRoundTrip},
        {"system round trip (same energies/forces)", testSystemRoundTrip},
    });
}
