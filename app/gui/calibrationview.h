// CalibrationView: the one place where the calibration data is chosen, for the Convert and Profile
// jobs alike: a text file (tokenized with the model's tokenizer), a token file, or N tokens
// sampled from the dense model with a seed; the token budget. Counts the tokens and shows the
// first of them decoded (read on a worker thread). Its setting is the project's "calibration"
// setting (core::kCalibrationSetting), as JSON. GUI thread only.
#pragma once

#include <QFutureWatcher>
#include <QString>
#include <QWidget>

#include "workbenchjob.h"

class QComboBox;
class QLabel;
class QLineEdit;
class QPlainTextEdit;
class QPushButton;
class QSpinBox;

namespace ladimo::gui {

class CalibrationView : public QWidget {
    Q_OBJECT
public:
    enum Kind { SelfSample = 0, TokenFile = 1, TextFile = 2 }; // the order of the Data combo box

    explicit CalibrationView(QWidget* parent = nullptr);
    ~CalibrationView() override;

    // The dense model the data is for (tokenizer, vocabulary, self-sampling); empty: none open.
    void setModel(const QString& modelDir);
    // Shows `json` (the project setting, or a run's recorded data); settingsChanged is not emitted.
    void setSettingJson(const QString& json);
    QString settingJson() const;     // {"kind", "file", "self_sample", "seed", "max_tokens", "tokens"}
    DataChoice dataChoice() const;   // what the jobs read
    bool needsFile() const;          // a file kind with no file chosen
    QString summary() const;         // "self-sample 16384 tokens, seed 1234" / "file F, first N tokens"
    void setEditable(bool editable); // off while a job runs

    // Counts the tokens and decodes the first ones in the background; previewFinished follows.
    bool startPreview();
    qint64 tokenCount() const { return m_counted; } // 0: not counted for these settings
    QString previewText() const;
    bool isPreviewRunning() const { return m_preview.isRunning(); }

Q_SIGNALS:
    void settingsChanged();
    void previewFinished(const QString& error);

private:
    void onEdited();
    void onPreviewFinished();
    void updateEnabled();

    QComboBox* m_kind = nullptr;
    QLineEdit* m_file = nullptr;
    QPushButton* m_browse = nullptr;
    QSpinBox* m_tokens = nullptr;
    QSpinBox* m_seed = nullptr;
    QPushButton* m_previewButton = nullptr;
    QLabel* m_count = nullptr;
    QPlainTextEdit* m_text = nullptr;
    QString m_modelDir;
    qint64 m_counted = 0;
    bool m_loading = false; // setSettingJson in progress: no settingsChanged
    bool m_editable = true;
    QFutureWatcher<CalibrationPreview> m_preview;
};

} // namespace ladimo::gui
