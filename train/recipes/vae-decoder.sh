#!/usr/bin/env bash
# VAE v2, second try (issue "Fidelity of the embedded default"): the shipped VAE's decoder fine-tuned
# on corpus v2 with the encoder frozen, so latents, latent_scale, the latent cache and every
# diffusion model stay valid. Against the first try (runs/tiny/vae2: adv 1, FM 2, MR-STFT worse
# with every eval): half the adversarial weight, FM 1, and semitone-band losses on 16384- and
# 8192-point windows (vae.pitch_weight; train/autoencoder/losses.py PitchBandLoss) for the bass and
# chord notes the mel loss cannot resolve. Resumes with the same call; SIGTERM stops it cleanly.
#   bash train/recipes/vae-decoder.sh            # train (runs/tiny/vae3, checkpoint every 250 steps)
#   bash train/recipes/vae-decoder.sh snapshot STEP OUT   # a live run's checkpoint -> a copy of the default with its decoder
# THREADS (default 1) sets OMP_NUM_THREADS.
cd "$(dirname "$0")/../.."
source train/recipes/lib.sh
RUN=runs/tiny/vae3
train() {  # train OUT [more args]
  local out=$1
  shift
  "$py" -m train.vae --config train/configs/tiny.json --out "$out" --resume latest --set data.root=data/corpus-v2 \
    --set vae.init=$A/vae --set vae.freeze_encoder=true --set vae.pca_init=false --set vae.gan_start_step=0 \
    --set vae.stft_weight=1.0 --set vae.pitch_weight=15 --set vae.adv_weight=0.5 --set vae.fm_weight=1.0 \
    --set vae.loop.max_steps=20000 --set vae.loop.lr=1e-4 --set vae.loop.warmup_steps=100 --set vae.lr_decay=1.0 \
    --set vae.eval_every=250 --set vae.loop.checkpoint_every=250 --set vae.loop.log_every=25 "$@"
}
case "${1:-}" in
  "") train "$RUN" ;;
  snapshot)
    step=${2:-} out=${3:-}
    [ -n "$out" ] || { echo "usage: vae-decoder.sh snapshot STEP OUT" >&2; exit 2; }
    snap="$RUN-snap-$step"
    snapshot_copy "$RUN" "$step"
    train "$snap" --max-steps "$step"
    default_with "$out" --vae "$snap/export/vae" ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
