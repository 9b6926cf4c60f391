// The pipeline step states (project/pipeline.h): each step goes not run -> running -> done, and
// to stale when an input changes since (the model or the calibration settings after the
// conversion, a conversion rerun after the profile, policy or evaluation, a policy edited after
// its evaluation), stale propagating to the steps downstream; and the facts read from a project,
// with the calibration setting round-tripping through the project file.
#include <nlohmann/json.hpp>

#include "project/pipeline.h"
#include "store/project.h"
#include "testutil.h"

using namespace ladimo::core;
using nlohmann::json;

namespace {

StepState stateOf(const PipelineFacts& f, PipelineStep s)
{
    return pipelineStates(f)[static_cast<std::size_t>(s)].state;
}
const StepStatus& statusOf(const std::array<StepStatus, kPipelineSteps>& a, PipelineStep s)
{
    return a[static_cast<std::size_t>(s)];
}

json selfSample(int64_t n, uint64_t seed)
{
    return {{"kind", "self_sample"}, {"self_sample", n}, {"seed", seed}, {"max_tokens", 0}, {"file", ""}};
}

ConversionRun doneRun(int64_t id, const json& calibration)
{
    ConversionRun r;
    r.id = id;
    r.modelId = 1;
    r.layers = 8;
    r.status = RunStatus::Done;
    r.seed = calibration.value("seed", uint64_t{1234});
    r.extra = {{"data", calibrationRunData(calibration)}, {"train_top_k", 4}};
    return r;
}

json rules(int k) { return json::array({{{"kind", "static"}, {"k", k}}}); }

// A project state where every step is done: run 3 converted on 16384 self-sampled tokens,
// profiled, a policy, its evaluation and an export.
PipelineFacts allDone()
{
    PipelineFacts f;
    f.modelOpen = true;
    f.modelName = "austen";
    f.modelLayers = 8;
    f.latestModelId = 1;
    f.calibration = selfSample(16384, 7);
    f.run = doneRun(3, *f.calibration);
    f.layersDone = 8;
    f.profileRunId = 3;
    f.profileLayers = 8;
    f.profileTokens = 16384;
    Policy p;
    p.id = 5;
    p.name = "fast";
    p.runId = 3;
    p.rules = rules(2);
    f.policies = {p};
    Evaluation e;
    e.policyId = 5;
    e.runId = 3;
    e.metrics = {{"perplexity", 12.5}, {"rules", rules(2)}};
    f.evaluations = {e};
    ExportRecord x;
    x.format = "gguf";
    x.path = "/tmp/out/austen-moe.gguf";
    x.runId = 3;
    x.policyId = 5;
    f.exports = {x};
    return f;
}

} // namespace

TEST(Pipeline, NothingOpenIsNotRunEverywhere)
{
    for (const auto& s : pipelineStates(PipelineFacts{})) {
        EXPECT_EQ(s.state, StepState::NotRun) << pipelineStepName(s.step);
        EXPECT_TRUE(s.produced.empty());
        EXPECT_FALSE(s.why.empty());
    }
}

TEST(Pipeline, StepsInWorkOrderWithNames)
{
    const auto a = pipelineStates(PipelineFacts{});
    const char* names[] = {"model", "calibration", "convert", "profile", "policy", "evaluate", "export"};
    for (int i = 0; i < kPipelineSteps; ++i) {
        EXPECT_EQ(static_cast<int>(a[static_cast<std::size_t>(i)].step), i);
        EXPECT_STREQ(pipelineStepName(a[static_cast<std::size_t>(i)].step), names[i]);
    }
    EXPECT_STREQ(stepStateName(StepState::Stale), "stale");
    EXPECT_STREQ(stepStateName(StepState::NotRun), "not run");
}

TEST(Pipeline, EveryStepDoneSaysWhatItProduced)
{
    const auto a = pipelineStates(allDone());
    for (const auto& s : a)
        EXPECT_EQ(s.state, StepState::Done) << pipelineStepName(s.step) << ": " << s.why;
    EXPECT_EQ(statusOf(a, PipelineStep::Model).produced, "austen, 8 layers");
    EXPECT_EQ(statusOf(a, PipelineStep::Calibration).produced, "self-sample 16384 tokens, seed 7");
    EXPECT_EQ(statusOf(a, PipelineStep::Convert).produced, "8 layers converted, run 3");
    EXPECT_NE(statusOf(a, PipelineStep::Profile).produced.find("on 16384 tokens"), std::string::npos);
    EXPECT_NE(statusOf(a, PipelineStep::Policy).produced.find("1 policy"), std::string::npos);
    EXPECT_NE(statusOf(a, PipelineStep::Evaluate).produced.find("perplexity 12.500"), std::string::npos);
    EXPECT_NE(statusOf(a, PipelineStep::Export).produced.find("austen-moe.gguf"), std::string::npos);
}

TEST(Pipeline, ModelThenCalibrationThenConversionGoFromNotRunToDone)
{
    PipelineFacts f;
    f.modelOpen = true;
    EXPECT_EQ(stateOf(f, PipelineStep::Model), StepState::Done);
    EXPECT_EQ(stateOf(f, PipelineStep::Calibration), StepState::NotRun);
    f.calibration = selfSample(4096, 1);
    EXPECT_EQ(stateOf(f, PipelineStep::Calibration), StepState::Done);
    EXPECT_EQ(stateOf(f, PipelineStep::Convert), StepState::NotRun);
    // A run in progress: not done yet (Start resumes it); the job running it makes it running.
    f.run = doneRun(1, *f.calibration);
    f.run->status = RunStatus::Running;
    f.layersDone = 3;
    EXPECT_EQ(stateOf(f, PipelineStep::Convert), StepState::NotRun);
    EXPECT_EQ(pipelineStates(f)[2].produced, "3 of 8 layers converted, run 1");
    f.running = PipelineStep::Convert;
    EXPECT_EQ(stateOf(f, PipelineStep::Convert), StepState::Running);
    f.running.reset();
    f.run->status = RunStatus::Done;
    f.layersDone = 8;
    EXPECT_EQ(stateOf(f, PipelineStep::Convert), StepState::Done);
    EXPECT_EQ(stateOf(f, PipelineStep::Profile), StepState::NotRun);
}

TEST(Pipeline, CalibrationFromTheRunWhenNeverChosen)
{
    PipelineFacts f;
    f.run = doneRun(2, selfSample(1000, 3));
    EXPECT_EQ(stateOf(f, PipelineStep::Calibration), StepState::Done);
    EXPECT_EQ(stateOf(f, PipelineStep::Convert), StepState::Done);
}

TEST(Pipeline, RunningMarksOnlyThatStep)
{
    auto f = allDone();
    f.running = PipelineStep::Profile;
    const auto a = pipelineStates(f);
    EXPECT_EQ(statusOf(a, PipelineStep::Profile).state, StepState::Running);
    EXPECT_EQ(statusOf(a, PipelineStep::Convert).state, StepState::Done);
    EXPECT_EQ(statusOf(a, PipelineStep::Evaluate).state, StepState::Done);
}

TEST(Pipeline, CalibrationChangedAfterConversionMakesItAndWhatFollowsStale)
{
    for (const json& changed : {selfSample(8192, 7), selfSample(16384, 8),
                                json{{"kind", "tokens"}, {"file", "/d/a.u16"}, {"seed", 7}, {"max_tokens", 0}}}) {
        auto f = allDone();
        f.calibration = changed;
        const auto a = pipelineStates(f);
        EXPECT_EQ(statusOf(a, PipelineStep::Calibration).state, StepState::Done);
        EXPECT_EQ(statusOf(a, PipelineStep::Convert).state, StepState::Stale) << changed.dump();
        EXPECT_NE(statusOf(a, PipelineStep::Convert).why.find("calibration settings changed since run 3"),
                  std::string::npos);
        for (auto s : {PipelineStep::Profile, PipelineStep::Policy, PipelineStep::Evaluate, PipelineStep::Export})
            EXPECT_EQ(statusOf(a, s).state, StepState::Stale) << pipelineStepName(s);
        EXPECT_EQ(statusOf(a, PipelineStep::Model).state, StepState::Done);
    }
    // Back to the data the run used: done again (the counted tokens are not part of its identity).
    auto f = allDone();
    f.calibration = selfSample(16384, 7);
    (*f.calibration)["tokens"] = 16384;
    EXPECT_EQ(stateOf(f, PipelineStep::Convert), StepState::Done);
}

TEST(Pipeline, ModelChangedAfterConversionMakesItStale)
{
    auto f = allDone();
    f.latestModelId = 2;
    const auto a = pipelineStates(f);
    EXPECT_EQ(statusOf(a, PipelineStep::Convert).state, StepState::Stale);
    EXPECT_NE(statusOf(a, PipelineStep::Convert).why.find("model changed"), std::string::npos);
}

TEST(Pipeline, ConversionRerunAfterProfileMakesProfileStale)
{
    auto f = allDone();
    f.run = doneRun(4, *f.calibration); // a new run; the profile, policy, evaluation and export are of run 3
    const auto a = pipelineStates(f);
    EXPECT_EQ(statusOf(a, PipelineStep::Convert).state, StepState::Done);
    EXPECT_EQ(statusOf(a, PipelineStep::Profile).state, StepState::Stale);
    EXPECT_NE(statusOf(a, PipelineStep::Profile).why.find("run 4"), std::string::npos);
    EXPECT_EQ(statusOf(a, PipelineStep::Policy).state, StepState::Stale);
    EXPECT_EQ(statusOf(a, PipelineStep::Evaluate).state, StepState::Stale);
    EXPECT_EQ(statusOf(a, PipelineStep::Export).state, StepState::Stale);
    // Profiled again: the profile is done, the old policy still stale until one is made for run 4.
    f.profileRunId = 4;
    EXPECT_EQ(stateOf(f, PipelineStep::Profile), StepState::Done);
    EXPECT_EQ(stateOf(f, PipelineStep::Policy), StepState::Stale);
    f.policies.back().runId = 4;
    EXPECT_EQ(stateOf(f, PipelineStep::Policy), StepState::Done);
}

TEST(Pipeline, PolicyEditedAfterEvaluationMakesEvaluationStale)
{
    auto f = allDone();
    f.policies.back().rules = rules(3);
    const auto a = pipelineStates(f);
    EXPECT_EQ(statusOf(a, PipelineStep::Policy).state, StepState::Done);
    EXPECT_EQ(statusOf(a, PipelineStep::Evaluate).state, StepState::Stale);
    EXPECT_NE(statusOf(a, PipelineStep::Evaluate).why.find("policy 'fast' was edited"), std::string::npos);
    // Evaluated again under the edited policy: done.
    f.evaluations.push_back(f.evaluations.back());
    f.evaluations.back().metrics["rules"] = rules(3);
    EXPECT_EQ(stateOf(f, PipelineStep::Evaluate), StepState::Done);
    // The evaluated policy deleted: stale.
    f.policies.clear();
    EXPECT_EQ(stateOf(f, PipelineStep::Evaluate), StepState::Stale);
    EXPECT_EQ(stateOf(f, PipelineStep::Export), StepState::Stale);
}

TEST(Pipeline, ProjectFactsAndTheCalibrationSettingRoundTrip)
{
    ladimo::test::TempDir dir;
    const auto file = dir / "P.ladimo";
    {
        auto p = Project::create(file);
        EXPECT_FALSE(p.setting(kCalibrationSetting).has_value());
        SourceModel m;
        m.path = "/models/austen";
        m.config = {{"num_hidden_layers", 4}};
        m.weightsSha256 = std::string(64, 'a');
        p.addModel(m);
        p.setSetting(kCalibrationSetting, selfSample(2048, 9));
        p.setSetting(kCalibrationSetting, selfSample(4096, 9)); // replaces
    }
    auto p = Project::open(file, {Project::Access::ReadOnly, Project::Verify::None});
    EXPECT_EQ(p.setting(kCalibrationSetting), selfSample(4096, 9));
    EXPECT_FALSE(p.setting("other").has_value());
    const auto f = readPipelineFacts(p);
    EXPECT_TRUE(f.modelOpen);
    EXPECT_EQ(f.modelName, "austen");
    EXPECT_EQ(f.modelLayers, 4);
    EXPECT_FALSE(f.run.has_value());
    const auto a = pipelineStates(f);
    EXPECT_EQ(statusOf(a, PipelineStep::Model).state, StepState::Done);
    EXPECT_EQ(statusOf(a, PipelineStep::Calibration).state, StepState::Done);
    EXPECT_EQ(statusOf(a, PipelineStep::Convert).state, StepState::NotRun);
}
