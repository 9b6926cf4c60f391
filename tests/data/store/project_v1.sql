-- A LaDiMo project as schema version 1 wrote it (before loss curves, exports and extra run
-- settings). Loaded into an empty database by tests/core/test_store.cpp (StoreMigration),
-- which writes the two layer files with the contents named below and opens it with the
-- current code. Never edit: it stands for files that exist in the wild.
BEGIN;
CREATE TABLE project (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    created TEXT NOT NULL,
    tool_version TEXT NOT NULL
);
CREATE TABLE source_model (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    config_json TEXT NOT NULL,
    weights_sha256 TEXT NOT NULL,
    total_params INTEGER NOT NULL DEFAULT 0,
    embedding_params INTEGER NOT NULL DEFAULT 0,
    attention_params INTEGER NOT NULL DEFAULT 0,
    ffn_params INTEGER NOT NULL DEFAULT 0,
    added TEXT NOT NULL
);
CREATE TABLE calibration_set (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('file', 'self_sample')),
    file_path TEXT,
    file_sha256 TEXT,
    seed INTEGER,
    tokens INTEGER NOT NULL,
    seq_len INTEGER NOT NULL DEFAULT 0,
    split TEXT NOT NULL,
    added TEXT NOT NULL
);
CREATE TABLE conversion_run (
    id INTEGER PRIMARY KEY,
    model_id INTEGER NOT NULL REFERENCES source_model(id),
    calibration_set_id INTEGER REFERENCES calibration_set(id),
    layers INTEGER NOT NULL,
    experts INTEGER NOT NULL,
    expert_size INTEGER NOT NULL,
    partition TEXT NOT NULL,
    gating TEXT NOT NULL,
    train_top_k INTEGER NOT NULL,
    epochs INTEGER NOT NULL,
    lr REAL NOT NULL,
    batch INTEGER NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('parallel', 'sequential')),
    device TEXT NOT NULL,
    seed INTEGER NOT NULL,
    tool_version TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'cancelled', 'interrupted'))
);
CREATE TABLE layer_result (
    run_id INTEGER NOT NULL REFERENCES conversion_run(id) ON DELETE CASCADE,
    layer INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    final_loss REAL,
    relative_error REAL,
    wall_seconds REAL,
    weights_path TEXT,
    weights_sha256 TEXT,
    failure_reason TEXT,
    updated TEXT NOT NULL,
    PRIMARY KEY (run_id, layer),
    CHECK (status <> 'done' OR (weights_path IS NOT NULL AND weights_sha256 IS NOT NULL))
);
CREATE TABLE routing_profile (
    run_id INTEGER NOT NULL,
    layer INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    bin_edges BLOB NOT NULL,
    ranks INTEGER NOT NULL,
    rank_histograms BLOB NOT NULL,
    expert_load BLOB NOT NULL,
    entropy REAL NOT NULL,
    error_by_k BLOB NOT NULL,
    PRIMARY KEY (run_id, layer),
    FOREIGN KEY (run_id, layer) REFERENCES layer_result(run_id, layer) ON DELETE CASCADE
);
CREATE TABLE policy (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL CHECK (origin IN ('auto', 'manual', 'imported')),
    run_id INTEGER REFERENCES conversion_run(id) ON DELETE SET NULL,
    rules_json TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE evaluation (
    id INTEGER PRIMARY KEY,
    policy_id INTEGER REFERENCES policy(id) ON DELETE SET NULL,
    run_id INTEGER REFERENCES conversion_run(id) ON DELETE SET NULL,
    data TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    device TEXT NOT NULL,
    timestamp TEXT NOT NULL
);
INSERT INTO project (id, created, tool_version) VALUES (1, '2024-05-01T10:00:00.000Z', '0.1.0');
INSERT INTO source_model (id, path, config_json, weights_sha256, total_params, embedding_params,
                          attention_params, ffn_params, added)
VALUES (1, '/models/tiny-llama', '{"hidden_size": 64, "num_hidden_layers": 2}',
        'aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11', 1000, 200, 300, 480,
        '2024-05-01T10:00:01.000Z');
INSERT INTO calibration_set (id, name, source, file_path, file_sha256, seed, tokens, seq_len, split, added)
VALUES (1, 'self-sample', 'self_sample', NULL, NULL, 1234, 4096, 256, 'train', '2024-05-01T10:00:02.000Z');
INSERT INTO conversion_run (id, model_id, calibration_set_id, layers, experts, expert_size, partition, gating,
                            train_top_k, epochs, lr, batch, mode, device, seed, tool_version, started,
                            finished, status)
VALUES (1, 1, 1, 3, 4, 48, 'coactivation', 'hard', 2, 5, 0.001, 128, 'parallel', 'cpu', 7, '0.1.0',
        '2024-05-01T10:01:00.000Z', NULL, 'running');
-- Layers 0 and 1 finished ("v1 layer N weights" is each file's content); layer 2 was running
-- when the version-1 tool was killed.
INSERT INTO layer_result (run_id, layer, status, final_loss, relative_error, wall_seconds, weights_path,
                          weights_sha256, failure_reason, updated)
VALUES (1, 0, 'done', 0.25, 0.125, 3.5, 'runs/1/layer-000.safetensors',
        '77bbff751bcbcf059b0d735797b73870b7fefae07d5c9a2043a01dac184350b6', NULL, '2024-05-01T10:02:00.000Z'),
       (1, 1, 'done', 0.5, 0.25, 4.5, 'runs/1/layer-001.safetensors',
        '9c271f48b7be3964df3a018be947e001c782e0f5e3a9e77798d9b48438ef108e', NULL, '2024-05-01T10:03:00.000Z'),
       (1, 2, 'running', NULL, NULL, NULL, NULL, NULL, NULL, '2024-05-01T10:03:01.000Z');
INSERT INTO routing_profile (run_id, layer, tokens, bin_edges, ranks, rank_histograms, expert_load, entropy, error_by_k)
VALUES (1, 0, 100, X'000000000000000000000000000000000000000000000000', 0, X'', X'', 1.5, X'000000000000F03F');
INSERT INTO policy (id, name, origin, run_id, rules_json, created)
VALUES (1, 'top-2 everywhere', 'manual', 1, '[{"top_k": 2}, {"top_k": 2}, {"top_k": 2}]', '2024-05-01T10:04:00.000Z');
INSERT INTO evaluation (id, policy_id, run_id, data, metrics_json, device, timestamp)
VALUES (1, 1, 1, 'self-sample heldout 2048 tokens', '{"perplexity": 42.5}', 'cpu', '2024-05-01T10:05:00.000Z');
PRAGMA application_id = 1279544655;
PRAGMA user_version = 1;
COMMIT;
