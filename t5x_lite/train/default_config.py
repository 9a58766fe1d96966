"""Every experiment key, its one default and what it means.

This is the embedded default experiment: `t5x-lite train --workdir DIR` with no
--config trains exactly this, a T5.1.1-shaped 2+2-layer model on the shipped
corpus, sized to show a falling loss in a few minutes on 2 CPU cores.  Named
experiments (configs/*.py) start from get_config() and change only what differs;
`--config.KEY=VALUE` (or a gin binding) sets any key below.  The allowed values of
a choice key come from the module named in its comment (t5x_lite/train/config.py
validates them).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0                      # params init, dropout keys and data order (unless data.shuffle_seed >= 0)
    c.vocabulary = "builtin"        # builtin | byte | byte:N | spm:PATH[:N] (t5x_lite/data/vocabularies.py)
    c.init_checkpoint = ""          # fine-tune: params (and the model section) from this checkpoint or workdir

    # Model: the fields of t5x_lite.models.config.ModelConfig (choices are listed there).  With
    # init_checkpoint set, the model comes from the checkpoint and only keys changed here apply.
    c.model = m = ml_collections.ConfigDict()
    m.architecture = "encoder_decoder"   # encoder_decoder (T5) | decoder_only (LM, prefix LM) | encoder_only (BERT) | electra
    m.vocab_size = 0                     # 0 = the vocabulary's size rounded up to a multiple of 128
    m.d_model = 128                      # width of the residual stream (T5X emb_dim)
    m.embedding_size = 0                 # token/position embedding width; 0 = d_model; else factorised: projected to d_model (ELECTRA-Small 128)
    m.num_heads = 4                      # attention heads
    m.d_kv = 32                          # width of each head (T5X head_dim)
    m.d_ff = 256                         # MLP hidden width (T5X mlp_dim)
    m.num_encoder_layers = 2             # encoder blocks (the stack of encoder_only / electra; unused by decoder_only)
    m.num_decoder_layers = 2             # decoder blocks (the stack of decoder_only; unused by encoder_only)
    m.mlp_activations = ("gelu", "linear")  # T5.1.1 gated GELU; ("relu",) is T5.1.0
    m.tie_embeddings = False             # share input and output embeddings, logits scaled by d_model**-0.5
    m.dropout_rate = 0.0                 # 0 for pretraining (T5.1.1), 0.1 for fine-tuning
    m.layer_norm_epsilon = 1e-6          # RMS norm epsilon
    m.position_embedding = "relative"    # relative (T5 buckets) | learned | sinusoidal
    m.relative_attention_num_buckets = 32    # relative positions: number of buckets
    m.relative_attention_max_distance = 128  # relative positions: distance of the last bucket
    m.max_position_embeddings = 2048     # learned/sinusoidal positions: longest sequence
    m.shared_encoder_decoder = False     # encoder_decoder: one set of layer params for both stacks
    m.decoder_mask = "causal"            # decoder_only: causal (LM) | prefix (inputs fully visible)
    m.num_classes = 0                    # encoder_only: classification head size (0 = none)
    m.classifier_pooling = "mean"        # encoder_only head: mean over tokens | first token
    m.type_vocab_size = 0                # encoder_only/electra: segment (token type) embeddings, BERT: 2 (0 = none)
    m.nsp_head = False                   # encoder_only: BERT next-sentence-prediction head on the first position
    m.electra_generator_size = 0.25      # electra: generator width (d_model, heads, d_ff) as a fraction of the discriminator's
    m.electra_rtd_weight = 50.0          # electra: loss = generator MLM loss + this * replaced-token-detection loss
    m.dtype = "float32"                  # compute dtype: float32 | bfloat16
    m.param_dtype = "float32"            # stored params dtype: float32 | bfloat16
    m.remat_policy = "none"              # activation recomputation: none | full | dots_saveable
    m.scan_layers = False                # one lax.scan over the stacked layers (faster compiles)
    m.attention_impl = "auto"            # auto (cudnn on GPU with bfloat16, else einsum) | einsum | xla | cudnn (jax.nn.dot_product_attention); dropout calls use einsum

    # Data (t5x_lite/data).
    c.data = d = ml_collections.ConfigDict()
    d.task = "builtin_span_corruption"   # a registered task or mixture name (see `t5x-lite data list`)
    d.feature_lengths = ml_collections.ConfigDict(dict(inputs=128, targets=32))  # tokens per feature
    d.batch_size = 16                    # sequences per step, global over all hosts
    d.pack = True                        # pack several examples into one sequence
    d.shuffle = True                     # shuffle the training split
    d.shuffle_seed = -1                  # data order seed; -1 = `seed`
    d.eval_split = "validation"          # split of the eval loss every train.eval_every steps

    # Training loop (t5x_lite/train/loop.py) and loss (t5x_lite/train/losses.py).
    c.train = t = ml_collections.ConfigDict()
    t.num_steps = 300                    # optimizer updates in all
    t.checkpoint_every = 100             # steps between checkpoints (0 = only at the end)
    t.keep_checkpoints = 3               # newest checkpoints kept
    t.log_every = 10                     # steps between metrics.jsonl / TensorBoard rows
    t.eval_every = 100                   # steps between evaluations (0 = none)
    t.eval_steps = 4                     # batches of data.eval_split per eval loss
    t.num_microbatches = 1               # gradient accumulation over this many slices of the batch
    t.z_loss = 1e-4                      # weight of log(Z)^2 (T5X)
    t.label_smoothing = 0.0              # in [0, 1)
    t.loss_normalization = "sum"         # losses.NORMALIZATIONS: sum (T5X default) | mean per target token
    t.grad_clip = 0.0                    # global-norm gradient clipping; 0 = off (Adafactor clips updates)
    t.async_checkpointing = True         # write checkpoints while the next steps run

    # Optimizer and learning-rate schedule (t5x_lite/train/optimizers.py).
    c.optimizer = o = ml_collections.ConfigDict()
    o.name = "adafactor"                 # optimizers.NAMES: adafactor | adamw
    o.schedule = "constant"              # optimizers.SCHEDULES: rsqrt | linear | cosine | constant
    o.learning_rate = 0.01               # peak rate (rsqrt: divided by sqrt(max(step, warmup_steps)))
    o.warmup_steps = 0                   # linear warm-up steps (rsqrt: the constant phase)
    o.end_learning_rate = 0.0            # linear/cosine: the rate at train.num_steps
    o.weight_decay = 0.0                 # decoupled weight decay (both optimizers)
    o.decay_rate = 0.8                   # adafactor: second-moment decay, beta2 = 1 - step^-decay_rate
    o.clipping_threshold = 1.0           # adafactor: update RMS clipping (0 = off)
    o.multiply_by_parameter_scale = True  # adafactor: scale updates by each param's RMS
    o.factored = True                    # adafactor: factored second moments
    o.min_dim_size_to_factor = 128       # adafactor: factor only dimensions at least this large
    o.momentum = 0.0                     # adafactor: first-moment decay (0 = none, as T5)
    o.adafactor_epsilon = 1e-30          # adafactor: added to the squared gradients
    o.b1 = 0.9                           # adamw: first-moment decay
    o.b2 = 0.999                         # adamw: second-moment decay
    o.epsilon = 1e-8                     # adamw: denominator epsilon

    # Device mesh (t5x_lite/partitioning.py MESH_AXES); one axis may be -1 = all remaining devices.
    c.mesh = h = ml_collections.ConfigDict()
    h.data = -1                          # data parallelism: batch split, params replicated
    h.fsdp = 1                           # batch split, params and optimizer state sharded too
    h.tensor = 1                         # tensor parallelism: heads, MLP and vocabulary split

    # Decode-based evaluation every train.eval_every steps (t5x_lite/evaluation/evaluator.py).
    c.evaluation = e = ml_collections.ConfigDict()
    e.tasks = ()                         # task names to decode and score (() = none)
    e.split = "validation"               # split to decode
    e.num_examples = 64                  # first examples of the split
    e.batch_size = 16                    # decode batch size
    e.decode = "greedy"                  # decoding.METHODS: greedy | beam | sample
    e.beam_size = 4                      # beam: beams per example
    e.alpha = 0.6                        # beam: brevity penalty (T5X)
    e.max_decode_length = 64             # tokens decoded per example
    return c
