// PlaygroundView: try the conversion on a prompt. "Generate" continues the prompt with the dense
// model and with the converted model under the Policy view's current rules side by side, each on
// its own worker thread (a pool of the view's own), streamed token by token in 20 ms batches with
// tokens per second; Stop cancels both at their next token. The converted text is then routed
// (core::routeTokens) on a worker, the prompt ("Route prompt") at once: each token coloured by the compute it cost (experts used, activated FFN
// parameters) or by its KL to the dense model, a tooltip per token with every layer's experts and
// weights, and a token x layer heatmap whose selected column follows the selected token. A Policy
// view edit re-routes the shown tokens at once, on the GUI thread (no regeneration); undo / redo of
// policy edits work from here too. The run is loaded through the ProjectSession
// (readRouteModel) off the GUI thread. GUI thread only; the destructor cancels and waits.
#pragma once

#include <QElapsedTimer>
#include <QFutureWatcher>
#include <QString>
#include <QThreadPool>
#include <QTimer>
#include <QWidget>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "common/progress.h"
#include "policytablemodel.h"
#include "projectsession.h"

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QPlainTextEdit;
class QPushButton;
class QSpinBox;
class QTextBrowser;

namespace ladimo::core {
struct RouteResult;
}

namespace ladimo::widgets {
class TokenLayerMap;
}

namespace ladimo::gui {

class PlaygroundView : public QWidget {
    Q_OBJECT
public:
    enum class ColourBy { Experts = 0, Parameters = 1, Kl = 2 };

    // `policy`: the Policy view's table whose rules the converted model runs under (followed live).
    PlaygroundView(ProjectSession* session, PolicyTableModel* policy, QWidget* parent = nullptr);
    ~PlaygroundView() override;

    // Loads the project's latest run (off the GUI thread) unless it is the one loaded; modelLoaded
    // or loadFailed follow. Not a project, or no finished run: cleared with the reason.
    void setProject(const OpenedModel& model);
    void clear(const QString& message);
    bool isLoaded() const { return m_model != nullptr; }

    // Generation settings, as the controls hold them.
    void setPrompt(const QString& text);
    void setSampling(double temperature, int maxTokens, int seed, bool stopAtEnd = true);
    // Starts both generations; false (with the reason in the status line) when nothing is loaded,
    // the prompt is empty or a generation runs. tokenStreamed per token, then generationFinished.
    bool generate();
    void stop();
    bool isGenerating() const;
    // Routes the prompt text itself (BOS + its tokens) under the current rules; false when it
    // cannot (the status line says why).
    bool routePrompt();

    // The rules the converted model runs under: the Policy view's, or the run's training k in
    // every layer while the Policy view has none.
    std::vector<core::RoutingRule> currentRules() const;
    // What is shown: the routed tokens (empty before any routing).
    const core::RouteResult* routing() const { return m_routing.get(); }
    std::vector<int64_t> routedIds() const { return m_routedIds; }
    std::vector<int64_t> denseIds() const { return m_ids[0]; }
    std::vector<int64_t> convertedIds() const { return m_ids[1]; }
    QString denseText() const;
    QString convertedText() const;
    QString statusText() const;
    double tokensPerSecond(bool converted) const { return m_rate[converted ? 1 : 0]; }
    int routeCount() const { return m_routeCount; }
    int generationCount() const { return m_generationCount; }

    void setColourBy(ColourBy by);
    ColourBy colourBy() const;
    // Selects a routed token (text and heatmap column); -1: none.
    void selectToken(int index);
    int selectedToken() const { return m_selected; }
    // The tooltip of a routed token: every layer's experts and weights.
    QString tokenToolTip(int index) const;
    // The coloured text (HTML) of the routed tokens.
    QString routedHtml() const;
    widgets::TokenLayerMap* heatmap() const { return m_heatmap; }

Q_SIGNALS:
    void modelLoaded();
    void loadFailed(const QString& message);
    void tokenStreamed(bool converted, qint64 id);
    void generationFinished(bool cancelled, const QString& error);
    void routed();
    void tokenSelected(int index);

private:
    struct Outcome {
        std::vector<int64_t> ids;
        double seconds = 0;
        int64_t generated = 0;
        bool cancelled = false;
        QString error;
    };
    void buildUi();
    void startOne(int which, const std::vector<int64_t>& prompt, const std::vector<core::RoutingRule>& rules);
    // Takes the tokens the workers drew since the last call into the panes (a batch per call:
    // a flood of one event per token would hold the event loop).
    void drainTokens();
    void onOneFinished(int which);
    void onLoaded();
    void updateRulesLabel();
    // Routes m_routedIds under the current rules: on this thread (a policy edit: shown in the same
    // event-loop turn), or on a worker (a whole generated text) and shown when it is done. A
    // newer routing makes an older one still running moot.
    void reroute(bool inBackground = false);
    void showRouted(std::unique_ptr<core::RouteResult> result);
    void showRouting();
    void updateRates();
    void setStatus(const QString& text);

    ProjectSession* m_session = nullptr;
    PolicyTableModel* m_policy = nullptr;
    std::shared_ptr<const core::RouteModel> m_model;
    QString m_loadedPath;
    int64_t m_loadedRun = 0;
    struct Loaded {
        std::shared_ptr<const core::RouteModel> model;
        QString error;
    };
    QFutureWatcher<Loaded> m_loader;
    QString m_loadingPath;
    int64_t m_loadingRun = 0;
    int m_generation = 0;       // which generation streamed tokens belong to (clear() moves it on)
    int m_activeGeneration = 0; // the one generate() started
    int m_running = 0;          // workers whose end was not handled yet
    // Tokens drawn by the workers, not shown yet; guarded by m_pendingMutex.
    std::mutex m_pendingMutex;
    std::vector<int64_t> m_pending[2];
    int m_pendingGeneration = 0;
    QTimer m_drain; // while generating: drainTokens every 20 ms
    // The generations run on a pool of their own: Qt paints with the global pool's threads (image
    // conversions), so two long generations there would hold every repaint until they end.
    QThreadPool m_pool;
    struct Routed {
        std::shared_ptr<core::RouteResult> result;
        QString error;
        int sequence = 0;
    };
    QFutureWatcher<Routed> m_router;
    int m_routeSequence = 0;              // of the newest routing asked for
    QFutureWatcher<Outcome> m_workers[2]; // 0: dense, 1: converted
    core::CancelToken m_cancel;
    QElapsedTimer m_clock;
    std::vector<int64_t> m_ids[2]; // prompt + generated so far
    int64_t m_streamed[2] = {0, 0};
    double m_rate[2] = {0, 0};
    std::vector<int64_t> m_routedIds;
    std::unique_ptr<core::RouteResult> m_routing;
    int m_selected = -1;
    int m_routeCount = 0;
    int m_generationCount = 0;
    QString m_generationError;
    bool m_generationCancelled = false;

    QPlainTextEdit* m_prompt = nullptr;
    QDoubleSpinBox* m_temperature = nullptr;
    QSpinBox* m_maxTokens = nullptr;
    QSpinBox* m_seed = nullptr;
    QCheckBox* m_stopAtEnd = nullptr;
    QPushButton* m_generate = nullptr;
    QPushButton* m_stop = nullptr;
    QPushButton* m_routePrompt = nullptr;
    QComboBox* m_colourBy = nullptr;
    QLabel* m_rules = nullptr;
    QLabel* m_paneTitle[2] = {nullptr, nullptr};
    QPlainTextEdit* m_pane[2] = {nullptr, nullptr};
    QTextBrowser* m_routed = nullptr;
    QLabel* m_routeSummary = nullptr;
    widgets::TokenLayerMap* m_heatmap = nullptr;
    QLabel* m_status = nullptr;
};

} // namespace ladimo::gui
