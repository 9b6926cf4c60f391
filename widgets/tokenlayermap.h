// TokenLayerMap: a token x layer heatmap (the Playground's view of a routed text): one column per
// token (labelled with its text), one row per layer, colour = a per-cell value (experts used,
// parameters, error) on a labelled scale. Clicking a cell selects its token column (outlined);
// setSelectedColumn keeps it in step with the text. Export as PNG/SVG/PDF and CSV from the
// context menu or the keyboard (plotexport.h). Neutral types in; the plotting library stays
// inside widgets/. GUI thread only.
#pragma once

#include <QStringList>
#include <QVector>
#include <QWidget>

#include "widgets/plotexport.h"

class QCustomPlot;
class QCPColorMap;
class QCPColorScale;
class QCPItemRect;
class QMouseEvent;

namespace ladimo::widgets {

class TokenLayerMap : public QWidget {
    Q_OBJECT
public:
    explicit TokenLayerMap(QWidget* parent = nullptr);

    // What a colour means ("experts used").
    void setScaleLabel(const QString& scale);
    // values[layer][token]; tokenLabels name the columns, layerLabels the rows (bottom to top).
    void setData(const QStringList& tokenLabels, const QStringList& layerLabels,
                 const QVector<QVector<double>>& values);
    void clear();

    int tokenCount() const { return m_tokens.size(); }
    int layerCount() const { return static_cast<int>(m_values.size()); }
    double value(int layer, int token) const;
    QString tokenLabel(int token) const { return m_tokens.value(token); }
    // Outlines `token`'s column (-1: none); does not emit tokenClicked.
    void setSelectedColumn(int token);
    int selectedColumn() const { return m_selected; }
    // The centre of a cell in this widget's pixels (for tests that click).
    QPoint pixelForCell(int layer, int token) const;
    void replotNow();

    bool save(const QString& file, int width = 0, int height = 0);
    // One row per token: index, token, then a column per layer.
    CsvTable csvTable() const;
    bool saveCsv(const QString& file) const;

Q_SIGNALS:
    void tokenClicked(int token);

private:
    void onMousePress(QMouseEvent* event);

    QCustomPlot* m_plot = nullptr;
    QCPColorMap* m_map = nullptr;
    QCPColorScale* m_scale = nullptr;
    QCPItemRect* m_selection = nullptr;
    QStringList m_tokens, m_layers;
    QVector<QVector<double>> m_values;
    int m_selected = -1;
};

} // namespace ladimo::widgets
