// TradeoffView: the tradeoff plot as a tab of its own, over the Policy view's data and model (one
// source of truth: the same fronts, stored policies, evaluations and the current policy, which
// moves live as the Policy view's sliders move). x is switchable (activated FFN parameters,
// estimated prefill or decode latency) independently of the Policy view's plot; y is the error
// proxy; measured points are joined to their estimates. Clicking a front or uniform top-k point
// applies that policy through the Policy view (undoable). GUI thread only.
#pragma once

#include <QWidget>

#include "policyview.h"

class QComboBox;
class QLabel;

namespace ladimo::widgets {
class TradeoffPlot;
}

namespace ladimo::gui {

class TradeoffView : public QWidget {
    Q_OBJECT
public:
    explicit TradeoffView(PolicyView* policy, QWidget* parent = nullptr);

    widgets::TradeoffPlot* plot() const { return m_plot; }
    void setAxis(PolicyView::Axis axis);
    PolicyView::Axis axis() const;
    QString statusText() const;

Q_SIGNALS:
    // A click applied a policy (described in statusText()).
    void policyApplied();

private:
    void refresh();
    void onEstimateChanged();

    PolicyView* m_policy = nullptr;
    QComboBox* m_axis = nullptr;
    widgets::TradeoffPlot* m_plot = nullptr;
    QLabel* m_totals = nullptr;
    QLabel* m_status = nullptr;
};

} // namespace ladimo::gui
