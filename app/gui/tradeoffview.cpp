#include "tradeoffview.h"

#include <QComboBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QStandardItemModel>
#include <QVBoxLayout>

#include "policytablemodel.h"
#include "widgets/tradeoffplot.h"

namespace ladimo::gui {

TradeoffView::TradeoffView(PolicyView* policy, QWidget* parent) : QWidget(parent), m_policy(policy)
{
    auto* layout = new QVBoxLayout(this);
    auto* top = new QHBoxLayout;
    auto* axisLabel = new QLabel(tr("&x axis:"));
    m_axis = new QComboBox;
    m_axis->setObjectName("tradeoffAxis");
    m_axis->addItem(tr("activated FFN parameters"));
    m_axis->addItem(tr("estimated prefill latency"));
    m_axis->addItem(tr("estimated decode latency"));
    m_axis->setToolTip(tr("Cost on the x axis, as a fraction of the dense model; latency needs a latency model "
                          "(ladimo latency P.ladimo)"));
    axisLabel->setBuddy(m_axis);
    top->addWidget(axisLabel);
    top->addWidget(m_axis);
    m_totals = new QLabel;
    m_totals->setTextFormat(Qt::RichText);
    m_totals->setWordWrap(true);
    m_totals->setToolTip(tr("The current policy (edited in the Policy view) over the whole model"));
    top->addSpacing(12);
    top->addWidget(m_totals, 1);
    layout->addLayout(top);
    m_plot = new widgets::TradeoffPlot;
    m_plot->setObjectName("tradeoff");
    layout->addWidget(m_plot, 1);
    m_status = new QLabel(tr("Click a point of the Pareto front or a uniform top-k point to apply that policy; "
                             "edit layers by hand in the Policy view."));
    m_status->setWordWrap(true);
    m_status->setTextInteractionFlags(Qt::TextSelectableByMouse);
    layout->addWidget(m_status);

    connect(m_axis, qOverload<int>(&QComboBox::currentIndexChanged), this, &TradeoffView::refresh);
    connect(m_policy, &PolicyView::plotDataChanged, this, &TradeoffView::refresh);
    connect(m_policy->model(), &PolicyTableModel::estimateChanged, this, &TradeoffView::onEstimateChanged);
    connect(m_plot, &widgets::TradeoffPlot::frontPointClicked, this, [this](int i) {
        m_policy->applyFrontPoint(i, axis());
        m_status->setText(m_policy->statusText());
        Q_EMIT policyApplied();
    });
    connect(m_plot, &widgets::TradeoffPlot::uniformPointClicked, this, [this](int i) {
        m_policy->applyUniform(i + 1);
        m_status->setText(tr("Applied top-%1 in every layer.").arg(i + 1));
        Q_EMIT policyApplied();
    });
    refresh();
}

void TradeoffView::setAxis(PolicyView::Axis a) { m_axis->setCurrentIndex(static_cast<int>(a)); }

PolicyView::Axis TradeoffView::axis() const
{
    const int i = m_axis->currentIndex();
    return i >= 0 && i < 3 ? static_cast<PolicyView::Axis>(i) : PolicyView::ParamsAxis;
}

QString TradeoffView::statusText() const { return m_status->text(); }

void TradeoffView::refresh()
{
    const bool lat = m_policy->hasLatency();
    if (!lat && m_axis->currentIndex() > 0) {
        m_axis->setCurrentIndex(0); // calls refresh again
        return;
    }
    if (auto* items = qobject_cast<QStandardItemModel*>(m_axis->model()))
        for (int i = 1; i < 3; ++i)
            items->item(i)->setEnabled(lat);
    const bool any = !m_policy->data().tables.layers.empty();
    m_axis->setEnabled(any);
    m_policy->fillTradeoffPlot(m_plot, axis());
    m_totals->setText(any ? m_policy->totalsText() : tr("No policy: open a project with a routing profile."));
}

void TradeoffView::onEstimateChanged()
{
    const auto& e = m_policy->model()->estimate();
    if (e.layers.empty())
        return;
    m_plot->setCurrent(m_policy->pointOf(e, axis()));
    m_totals->setText(m_policy->totalsText());
}

} // namespace ladimo::gui
