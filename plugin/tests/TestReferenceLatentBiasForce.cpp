/*
 * LatentBiasForce on the Reference and CPU platforms: energies against the bias evaluated at the model's z,
 * forces against central finite differences (grid-only 1-3D incl. mixed periodicity and walls, restraints, both),
 * live updates, last z / energies, periodic boxes, float32 models, and errors for bad inputs.
 */
#include "TestUtilities.h"
#include "internal/LatentBiasGrid.h"

using namespace LatentBiasPlugin;
using namespace LatentBiasTest;
using namespace std;

static Context* makeContext(System& system, const string& platform, VerletIntegrator& integrator) {
    Context* context = new Context(system, integrator, Platform::getPlatformByName(platform));
    context->setPositions(testPositions());
    return context;
}

static vector<double> gridValues(const vector<LatentBiasGrid::Axis>& axes) {
    int n[3] = {1, 1, 1};
    for (size_t k = 0; k < axes.size(); k++)
        n[k] = axes[k].size;
    vector<double> values(n[0] * n[1] * n[2]);
    for (int i2 = 0; i2 < n[2]; i2++)
        for (int i1 = 0; i1 < n[1]; i1++)
            for (int i0 = 0; i0 < n[0]; i0++) {
                int idx[3] = {i0, i1, i2};
                double s[3] = {0, 0, 0};
                for (size_t k = 0; k < axes.size(); k++)
                    s[k] = 2 * M_PI * idx[k] / (axes[k].size - 1);
                values[i0 + n[0] * (i1 + n[1] * i2)] = 20.0 * sin(s[0] + 0.3) + 15.0 * cos(s[1] - 0.2) * sin(s[0])
                                                         + 10.0 * cos(s[2] + 0.7);
            }
    // along periodic dimensions the last plane must repeat the first exactly
    int stride[3] = {1, n[0], n[0] * n[1]};
    for (size_t k = 0; k < axes.size(); k++) {
        if (!axes[k].periodic)
            continue;
        int a = (k + 1) % 3, b = (k + 2) % 3;
        for (int i = 0; i < n[a]; i++)
            for (int j = 0; j < n[b]; j++)
                values[i * stride[a] + j * stride[b] + (n[k] - 1) * stride[k]] = values[i * stride[a] + j * stride[b]];
    }
    return values;
}

/** Grid over `components` around the model's z (shifted by `offset` so that z may lie beyond an edge). */
static void gridCase(const string& platform, const vector<int>& components, const vector<bool>& periodic,
                     double offset = 0.0) {
    vector<Vec3> pos = testPositions();
    vector<double> z = computeZ(modelPath("model_d3.pt"), pos);
    System* system = makeSystem(5);
    LatentBiasForce* force = new LatentBiasForce(modelPath("model_d3.pt"));
    ASSERT_EQUAL(3, force->getModelLatentDim());
    ASSERT_EQUAL(5, force->getModelNumAtoms());
    vector<LatentBiasGrid::Axis> axes;
    int sizes[3] = {13, 11, 9};
    for (size_t k = 0; k < components.size(); k++) {
        double lo = z[components[k]] - 0.6 + offset, hi = z[components[k]] + 0.7 + offset;
        force->addGridDimension(components[k], lo, hi, sizes[k], periodic[k]);
        axes.push_back({lo, hi, sizes[k], periodic[k]});
    }
    vector<double> values = gridValues(axes);
    force->setGridValues(values);
    force->setWallForceConstant(400.0);
    force->setForceGroup(2);
    system->addForce(force);
    VerletIntegrator integrator(0.001);
    Context* context = makeContext(*system, platform, integrator);

    // energy = spline at the (clamped/wrapped) z + walls
    LatentBiasGrid grid;
    grid.initialize(axes, values);
    double t[3], g[3], walls = 0.0;
    for (size_t k = 0; k < components.size(); k++) {
        double v = z[components[k]];
        if (!periodic[k]) {
            double over = max(0.0, v - axes[k].maxValue) + max(0.0, axes[k].minValue - v);
            walls += 0.5 * 400.0 * over * over;
            v = min(max(v, axes[k].minValue), axes[k].maxValue);
        }
        t[k] = v;
    }
    double expected = grid.evaluate(t, g) + walls;
    ASSERT_EQUAL_TOL(expected, energy(*context, 1 << 2), 1e-10);
    vector<double> last = force->getLastEnergies(*context);
    ASSERT_EQUAL_TOL(expected, last[0], 1e-10);
    ASSERT_EQUAL(0.0, last[1]);
    checkFiniteDifferences(*context, pos, 1 << 2);
    delete context;
    delete system;
}

static void testGridForces(const string& platform) {
    gridCase(platform, {1}, {false});
    gridCase(platform, {1}, {true});
    gridCase(platform, {0, 2}, {false, false});
    gridCase(platform, {2, 0}, {true, true});
    gridCase(platform, {0, 1}, {true, false});        // mixed periodicity
    gridCase(platform, {0, 1, 2}, {false, false, false});
    gridCase(platform, {0, 1, 2}, {true, true, true});
    gridCase(platform, {2, 1, 0}, {false, true, false});
    // z beyond the upper (offset < 0) and lower (offset > 0) edges: table at the edge + walls
    gridCase(platform, {1}, {false}, -0.9);
    gridCase(platform, {0, 2}, {false, false}, 0.8);
}

static void testRestraints(const string& platform) {
    vector<Vec3> pos = testPositions();
    vector<double> z = computeZ(modelPath("model_d3.pt"), pos);
    System* system = makeSystem(5);
    LatentBiasForce* force = new LatentBiasForce(modelPath("model_d3.pt"));
    force->addRestraint(0, "", z[0] + 0.2, "", 300.0);
    force->addRestraint(2, "c2", z[2] - 0.1, "k2", 150.0, /*period*/ 0.5, /*lower*/ z[2] + 0.05, /*upper*/ 10.0, 80.0);
    ASSERT_EQUAL(4, force->getNumGlobalParameters());
    ASSERT_EQUAL(string("latent_z0_0"), force->getGlobalParameterName(0));
    ASSERT_EQUAL(string("latent_k_0"), force->getGlobalParameterName(1));
    system->addForce(force);
    VerletIntegrator integrator(0.001);
    Context* context = makeContext(*system, platform, integrator);
    auto expectedEnergy = [&](double c0, double k0, double c2, double k2) {
        double dev2 = (z[2] - c2) - 0.5 * std::nearbyint((z[2] - c2) / 0.5);
        double below = max(0.0, z[2] + 0.05 - z[2]);
        return 0.5 * k0 * (z[0] - c0) * (z[0] - c0) + 0.5 * k2 * dev2 * dev2 + 0.5 * 80.0 * below * below;
    };
    ASSERT_EQUAL_TOL(expectedEnergy(z[0] + 0.2, 300.0, z[2] - 0.1, 150.0), energy(*context), 1e-10);
    checkFiniteDifferences(*context, pos);
    // umbrella windows / steering: setParameter moves the centre without reinitialising
    context->setParameter("latent_z0_0", z[0] - 0.3);
    context->setParameter("k2", 40.0);
    context->setParameter("c2", z[2] + 0.7);   // wraps by one period
    ASSERT_EQUAL_TOL(expectedEnergy(z[0] - 0.3, 300.0, z[2] + 0.7, 40.0), energy(*context), 1e-10);
    vector<double> last = force->getLastEnergies(*context);
    ASSERT_EQUAL(0.0, last[0]);
    ASSERT_EQUAL_TOL(expectedEnergy(z[0] - 0.3, 300.0, z[2] + 0.7, 40.0), last[1], 1e-10);
    checkFiniteDifferences(*context, pos);
    delete context;
    delete system;
}

static void testGridAndRestraints(const string& platform) {
    vector<Vec3> pos = testPositions();
    vector<double> z = computeZ(modelPath("model_d3.pt"), pos);
    System* system = makeSystem(5);
    LatentBiasForce* force = new LatentBiasForce(modelPath("model_d3.pt"));
    vector<LatentBiasGrid::Axis> axes = {{z[0] - 0.5, z[0] + 0.5, 15, false}, {z[1] - 1.0, z[1] + 0.4, 12, false}};
    force->addGridDimension(0, axes[0].minValue, axes[0].maxValue, 15);
    force->addGridDimension(1, axes[1].minValue, axes[1].maxValue, 12);
    force->setGridValues(gridValues(axes));
    force->addRestraint(2, "", z[2] + 0.3, "", 250.0);
    system->addForce(force);
    VerletIntegrator integrator(0.001);
    Context* context = makeContext(*system, platform, integrator);
    double e = energy(*context);
    vector<double> last = force->getLastEnergies(*context);
    ASSERT_EQUAL_TOL(e, last[0] + last[1], 1e-12);
    ASSERT_EQUAL_TOL(0.5 * 250.0 * 0.09, last[1], 1e-10);
    checkFiniteDifferences(*context, pos);
    delete context;
    delete system;
}

static void testGridScale(const string& platform) {
    // grid energy = s*table + walls with s a global parameter; z beyond the upper edge so the walls act
    vector<Vec3> pos = testPositions();
    vector<double> z = computeZ(modelPath("model_d3.pt"), pos);
    System* system = makeSystem(5);
    LatentBiasForce* force = new LatentBiasForce(modelPath("model_d3.pt"));
    vector<LatentBiasGrid::Axis> axes = {{z[1] - 1.0, z[1] - 0.2, 17, false}};
    force->addGridDimension(1, axes[0].minValue, axes[0].maxValue, 17);
    vector<double> values = gridValues(axes);
    force->setGridValues(values);
    force->setWallForceConstant(300.0);
    force->setGridScaleParameter("bias_scale", 1.0);
    force->addRestraint(0, "", z[0] + 0.1, "", 10.0);
    ASSERT_EQUAL(3, force->getNumGlobalParameters());
    ASSERT_EQUAL(string("bias_scale"), force->getGlobalParameterName(0));
    expectThrow([&] { force->addRestraint(2, "bias_scale", 0.0, "", 1.0); }, "grid scale parameter");
    system->addForce(force);
    VerletIntegrator integrator(0.001);
    Context* context = makeContext(*system, platform, integrator);
    LatentBiasGrid grid;
    grid.initialize(axes, values);
    double t = axes[0].maxValue, g;
    double table = grid.evaluate(&t, &g), walls = 0.5 * 300.0 * 0.2 * 0.2;
    for (double s : {1.0, 0.25, 0.0}) {
        context->setParameter("bias_scale", s);
        energy(*context);
        vector<double> last = force->getLastEnergies(*context);
        ASSERT_EQUAL_TOL(s * table + walls, last[0], 1e-10);
        ASSERT_EQUAL_TOL(0.5 * 10.0 * 0.01, last[1], 1e-10);
        checkFiniteDifferences(*context, pos);
    }
    delete context;
    delete system;
}

static void testUpdatesAndLastValues(const string& platform) {
    vector<Vec3> pos = testPositions();
    vector<double> z = computeZ(modelPath("model_d3.pt"), pos);
    System* system = makeSystem(5);
    LatentBiasForce* force = new LatentBiasForce(modelPath("model_d3.pt"));
    vector<LatentBiasGrid::Axis> axes = {{z[1] - 0.5, z[1] + 0.5, 21, false}};
    force->addGridDimension(1, axes[0].minValue, axes[0].maxValue, 21);
    force->addRestraint(0, "", z[0], "", 100.0);
    system->addForce(force);
    VerletIntegrator integrator(0.001);
    Context* context = makeContext(*system, platform, integrator);
    ASSERT(force->getLastLatentValues(*context).empty());
    ASSERT(!force->isLastEvaluationCurrent(*context));
    ASSERT_EQUAL_TOL(0.0, energy(*context), 1e-12);   // zero grid, restraint at its centre
    vector<double> last = force->getLastLatentValues(*context);
    ASSERT_EQUAL(3, (int) last.size());
    for (int i = 0; i < 3; i++)
        ASSERT_EQUAL_TOL(z[i], last[i], 1e-12);
    ASSERT(force->isLastEvaluationCurrent(*context));

    // new grid values reach the Context without reinitialising it
    vector<double> values = gridValues(axes);
    force->setGridValues(values);
    ASSERT(force->isLastEvaluationCurrent(*context));
    force->updateParametersInContext(*context);
    ASSERT(!force->isLastEvaluationCurrent(*context));
    LatentBiasGrid grid;
    grid.initialize(axes, values);
    double g;
    ASSERT_EQUAL_TOL(grid.evaluate(&z[1], &g), energy(*context), 1e-10);
    ASSERT(force->isLastEvaluationCurrent(*context));
    checkFiniteDifferences(*context, pos);
    context->setParameter("latent_k_0", 50.0);
    ASSERT(!force->isLastEvaluationCurrent(*context));
    energy(*context);
    vector<Vec3> moved = pos;
    moved[3][0] += 0.01;
    context->setPositions(moved);
    ASSERT(!force->isLastEvaluationCurrent(*context));
    forces(*context);
    vector<double> zMoved = computeZ(modelPath("model_d3.pt"), moved);
    last = force->getLastLatentValues(*context);
    for (int i = 0; i < 3; i++)
        ASSERT_EQUAL_TOL(zMoved[i], last[i], 1e-12);

    // the layout cannot change in a live Context
    LatentBiasForce& f = *force;
    f.setWallForceConstant(10.0);
    f.updateParametersInContext(*context);
    f.addRestraint(2, "", 0.0, "", 1.0);
    expectThrow([&] { f.updateParametersInContext(*context); }, "number of restraints");
    delete context;
    delete system;
}

static void testPeriodicBox(const string& platform) {
    System* system = makeSystem(5);
    Vec3 box[3] = {Vec3(1.5, 0, 0), Vec3(0, 1.6, 0), Vec3(0, 0, 1.7)};
    system->setDefaultPeriodicBoxVectors(box[0], box[1], box[2]);
    LatentBiasForce* force = new LatentBiasForce(modelPath("model_pbc.pt"));
    force->setUsesPeriodicBoundaryConditions(true);
    ASSERT(force->usesPeriodicBoundaryConditions());
    force->addRestraint(0, "", 0.0, "", 100.0);
    force->addRestraint(1, "", 0.1, "", 100.0);
    system->addForce(force);
    VerletIntegrator integrator(0.001);
    Context* context = makeContext(*system, platform, integrator);
    vector<Vec3> pos = testPositions();
    double e1 = energy(*context);
    vector<double> z = computeZ(modelPath("model_pbc.pt"), pos, box);
    vector<double> last = force->getLastLatentValues(*context);
    ASSERT_EQUAL_TOL(z[0], last[0], 1e-12);
    pos[2] += box[1];
    pos[4] -= box[0];
    context->setPositions(pos);
    ASSERT_EQUAL_TOL(e1, energy(*context), 1e-10);
    checkFiniteDifferences(*context, pos);
    delete context;
    delete system;
}

static void testFloat32Model(const string& platform) {
    vector<Vec3> pos = testPositions();
    vector<double> z = computeZ(modelPath("model_d3_f32.pt"), pos);
    System* system = makeSystem(5);
    LatentBiasForce* force = new LatentBiasForce(modelPath("model_d3_f32.pt"));
    force->addGridDimension(0, z[0] - 0.5, z[0] + 0.5, 11);
    force->addGridDimension(1, z[1] - 0.5, z[1] + 0.5, 11);
    force->setGridValues(gridValues({{0, 1, 11, false}, {0, 1, 11, false}}));
    force->addRestraint(2, "", z[2] + 0.1, "", 100.0);
    system->addForce(force);
    VerletIntegrator integrator(0.001);
    Context* context = makeContext(*system, platform, integrator);
    checkFiniteDifferences(*context, pos, -1, 1e-3, 2e-2);
    delete context;
    delete system;
}

static void testErrors(const string& platform) {
    // atom-count mismatch, at Context creation
    {
        System* system = makeSystem(4);
        LatentBiasForce* force = new LatentBiasForce(modelPath("model_d3.pt"));
        force->addRestraint(0, "", 0.0, "", 1.0);
        system->addForce(force);
        VerletIntegrator integrator(0.001);
        expectThrow([&] { Context c(*system, integrator, Platform::getPlatformByName(platform)); },
                    "built for 5 atoms but the System has 4");
        delete system;
    }
    // model output size != latent_dim of the metadata, at the first evaluation
    {
        System* system = makeSystem(5);
        LatentBiasForce* force = new LatentBiasForce(modelPath("model_bad_dim.pt"));
        force->addRestraint(0, "", 0.0, "", 1.0);
        system->addForce(force);
        VerletIntegrator integrator(0.001);
        Context* context = makeContext(*system, platform, integrator);
        expectThrow([&] { energy(*context); }, "returned 3 latent values but 2 were expected");
        delete context;
        delete system;
    }
    // a model without metadata: the biased components must exist
    {
        System* system = makeSystem(5);
        LatentBiasForce* force = new LatentBiasForce(modelPath("model_nometa.pt"));
        ASSERT_EQUAL(-1, force->getModelLatentDim());
        ASSERT_EQUAL(-1, force->getModelNumAtoms());
        force->addRestraint(2, "", 0.0, "", 1.0);
        system->addForce(force);
        VerletIntegrator integrator(0.001);
        Context* context = makeContext(*system, platform, integrator);
        expectThrow([&] { energy(*context); }, "latent component 2 is biased");
        delete context;
        delete system;
    }
    LatentBiasForce force(modelPath("model_d3.pt"));
    expectThrow([&] { force.addGridDimension(3, 0.0, 1.0, 10); }, "latent component 3 does not exist");
    expectThrow([&] { force.addRestraint(-1, "", 0.0, "", 1.0); }, "does not exist");
    expectThrow([&] { force.setGridValues({1.0, 2.0}); }, "add the grid dimensions");
    force.addGridDimension(0, 0.0, 1.0, 4);
    expectThrow([&] { force.addGridDimension(0, 0.0, 1.0, 4); }, "only once");
    expectThrow([&] { force.addGridDimension(1, 1.0, 0.0, 4); }, "minValue < maxValue");
    expectThrow([&] { force.addGridDimension(1, 0.0, 1.0, 2, true); }, "at least 3 points");
    force.addGridDimension(1, 0.0, 1.0, 5, true);
    force.addGridDimension(2, 0.0, 1.0, 3);
    expectThrow([&] { force.addGridDimension(2, 0.0, 1.0, 3); }, "at most 3 dimensions");
    expectThrow([&] { force.setGridValues(vector<double>(59, 0.0)); }, "the grid has 60 points (4 x 5 x 3) but 59");
    vector<double> values(60, 0.0);
    values[7] = NAN;
    expectThrow([&] { force.setGridValues(values); }, "grid value 7 is not finite");
    values[7] = INFINITY;
    expectThrow([&] { force.setGridValues(values); }, "not finite");
    values[7] = 0.0;
    values[4 * 4 + 1] = 1.0;   // last plane of the periodic dimension 1 differs from its first
    expectThrow([&] { force.setGridValues(values); }, "periodic");
    expectThrow([&] { force.setWallForceConstant(-1.0); }, "wall force constant");
    expectThrow([&] { force.addRestraint(0, "a", 0.0, "a", 1.0); }, "different parameter names");
    expectThrow([&] { force.addRestraint(0, "", 0.0, "", -1.0); }, "force constant");
    expectThrow([&] { force.addRestraint(0, "", 0.0, "", 1.0, 0.0, 1.0, 0.0); }, "lower wall");
    expectThrow([] { LatentBiasForce f(modelPath("does_not_exist.pt")); }, "cannot open");
    expectThrow([] { LatentBiasForce::fromModelData("not a zip archive"); }, "not a loadable TorchScript archive");
}

int main(int argc, char* argv[]) {
    initPlatforms();
    vector<pair<string, function<void()>>> tests;
    for (const string& p : platformNames()) {
        tests.push_back({p + ": grid forces vs finite differences", [p] { testGridForces(p); }});
        tests.push_back({p + ": restraints and setParameter", [p] { testRestraints(p); }});
        tests.push_back({p + ": grid + restraints", [p] { testGridAndRestraints(p); }});
        tests.push_back({p + ": grid scale parameter", [p] { testGridScale(p); }});
        tests.push_back({p + ": updateParametersInContext and last values", [p] { testUpdatesAndLastValues(p); }});
        tests.push_back({p + ": periodic box", [p] { testPeriodicBox(p); }});
        tests.push_back({p + ": float32 model", [p] { testFloat32Model(p); }});
        tests.push_back({p + ": errors", [p] { testErrors(p); }});
    }
    int rc = runTests(argc, argv, tests);
    if (platformNames().size() < 2) {
        cout << "note: the CPU platform was not available; only Reference was tested" << endl;
    }
    return rc;
}
