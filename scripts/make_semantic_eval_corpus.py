"""A small TTS speech corpus with exact phone alignments (festival), as audio shards.

Speakers = festival voice x resampling factor (pitch and formants x r, duration / r).
Train and val speakers are disjoint; the ked voice is only in val. Val sentences are spoken by
every val speaker (cross-speaker consistency). Not part of the package: an experiment helper.
"""
import random, subprocess, sys, tempfile
from pathlib import Path
import soundfile, soxr
from audiolm_pl.data.manifest import ShardEntry, ShardManifest, write_manifest
from audiolm_pl.data.shard_io import ShardWriter

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "data/semantic_eval/shards")
rng = random.Random(0)
subjects = "the old man|a young woman|my brother|the teacher|her small dog|the farmer|our neighbour|a tired child|the doctor|his sister|the captain|a quiet student|the baker|my father|the girl next door".split("|")
verbs = "found|painted|carried|wanted|bought|cleaned|followed|watched|opened|broke|pushed|sold|tasted|moved|hid|dropped|fixed|counted|brought|lifted".split("|")
objects = "a red box|the heavy chair|seven yellow apples|an empty bottle|the long rope|a broken watch|the blue boat|four wooden spoons|the thick book|a warm coat|the green door|some fresh bread|a shiny coin|the big window|two black shoes".split("|")
places = "near the river|in the kitchen|behind the house|at the market|under the bridge|on the hill|by the station|in the garden|at noon|before dinner|after the storm|during the summer|this morning|late at night".split("|")
def sentence():
    s = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(places)}"
    if rng.random() < 0.4:
        s += f" and {rng.choice(verbs)} {rng.choice(objects)}"
    return s[0].upper() + s[1:] + "."
texts = list(dict.fromkeys(sentence() for _ in range(400)))
train_texts, val_texts = texts[:240], texts[240:280]
VOICES = {"kal": "voice_kal_diphone", "ked": "voice_ked_diphone", "slt": "voice_cmu_us_slt_arctic_hts"}
train_speakers = [("kal", 0.88), ("kal", 0.95), ("kal", 1.03), ("kal", 1.12), ("slt", 0.88), ("slt", 1.03), ("slt", 1.12)]
val_speakers = [("ked", 1.0), ("ked", 0.9), ("slt", 0.95)]

def synth(voice, items, tmp):
    """items [(name, text)] -> {name: (wav 16k float32, [[start, end, phone]])} in one festival run."""
    lines = [f"({VOICES[voice]})"]
    for name, text in items:
        safe = text.replace('"', "")
        lines.append(f'(set! utt (utt.synth (Utterance Text "{safe}")))')
        lines.append(f'(utt.save.wave utt "{tmp}/{name}.wav" \'riff)')
        lines.append(f'(utt.save.segs utt "{tmp}/{name}.segs")')
    (Path(tmp) / "run.scm").write_text("\n".join(lines))
    subprocess.run(["festival", "-b", f"{tmp}/run.scm"], check=True)
    result = {}
    for name, _ in items:
        wav, rate = soundfile.read(f"{tmp}/{name}.wav", dtype="float32")
        if rate != 16000:
            wav = soxr.resample(wav, rate, 16000).astype("float32")
        phones, start = [], 0.0
        for line in Path(f"{tmp}/{name}.segs").read_text().split("#", 1)[1].split("\n"):
            parts = line.split()
            if len(parts) == 3:
                end = float(parts[0]); phones.append([start, end, parts[2]]); start = end
        result[name] = (wav, phones)
    return result

def write(split, speakers, texts_for):
    out = OUT / split; out.mkdir(parents=True, exist_ok=True)
    samples = []
    for voice in VOICES:
        mine = [(v, r) for v, r in speakers if v == voice]
        if not mine: continue
        needed = sorted({t for v, r in mine for t in texts_for(v, r)})
        with tempfile.TemporaryDirectory() as tmp:
            audio = synth(voice, [(f"s{i}", t) for i, t in enumerate(needed)], tmp)
        for v, r in mine:
            speaker = f"{v}_{int(round(r * 100))}"
            for t in texts_for(v, r):
                wav, phones = audio[f"s{needed.index(t)}"]
                shifted = soxr.resample(wav, 16000 * r, 16000).astype("float32")  # pitch x r, time / r
                ph = [[round(a / r, 4), round(b / r, 4), p] for a, b, p in phones]
                samples.append((f"{speaker}_{len(samples):05d}", shifted, {"duration": len(shifted) / 16000, "sample_rate": 16000,
                                "speaker": speaker, "text": t, "source": f"festival:{voice}", "offset": 0.0, "phones": ph}))
    random.Random(1).shuffle(samples)
    per = 100
    entries = []
    for i in range(0, len(samples), per):  # the package's one shard writer and manifest schema
        name, part = f"audio-{i // per:06d}.tar", samples[i:i + per]
        with ShardWriter(out / name) as writer:
            for key, wav, meta in part:
                writer.write_sample(key, meta, audio=wav, sample_rate=16000)
        entries.append(ShardEntry(name, len(part), round(sum(len(w) for _, w, _ in part) / 16000, 3)))
    manifest = ShardManifest(content="audio", sample_rate=16000, shards=entries,
                             speakers=sorted({meta["speaker"] for _, _, meta in samples}),
                             made_by={"command": "scripts/make_semantic_eval_corpus.py"})
    write_manifest(out, manifest)
    hours = manifest.total_seconds / 3600
    print(split, len(samples), "utterances", round(hours, 3), "h", flush=True)

per_speaker = {s: random.Random(i).sample(train_texts, 140) for i, s in enumerate(train_speakers)}
write("train", train_speakers, lambda v, r: per_speaker[(v, r)])
write("val", val_speakers, lambda v, r: val_texts)
