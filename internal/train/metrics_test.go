package train

import (
	"bufio"
	"context"
	"encoding/json"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Figures JSON lacks are written as null and read back as NaN, and a
// metrics line without its validation figures reads as no validation.
func TestNumberJSON(t *testing.T) {
	b, err := json.Marshal([]Number{0.5, Number(math.NaN()), Number(math.Inf(-1)), 0})
	if string(b) != "[0.5,null,null,0]" || err != nil {
		t.Errorf("marshal: %s, %v", b, err)
	}
	var back []Number
	if err := json.Unmarshal(b, &back); err != nil || len(back) != 4 || back[0] != 0.5 || back[1].Finite() || back[2].Finite() || back[3] != 0 {
		t.Errorf("unmarshal %s: %v, %v", b, back, err)
	}
	path := filepath.Join(t.TempDir(), MetricsFile)
	if err := os.WriteFile(path, []byte(`{"epoch":1,"train_loss":2,"val_loss":null,"val_acc":0.25}`+"\n"+`{"epoch":2,"train_loss":1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMetrics(path)
	if err != nil || len(got) != 2 || !math.IsNaN(got[0].ValLoss) || got[0].ValAcc != 0.25 || !math.IsNaN(got[1].ValLoss) || !math.IsNaN(got[1].ValAcc) || got[1].TrainLoss != 1 {
		t.Errorf("ReadMetrics: %+v, %v", got, err)
	}
}

// TestMetricsJSONKeys: each line of metrics.jsonl has README's keys, the
// ones scripts read: epoch (from 1), lr, train_loss, train_acc, val_loss,
// val_acc, best, seconds, images_per_sec — those and no others — holding
// the epoch's figures.
func TestMetricsJSONKeys(t *testing.T) {
	o := smallOptions()
	o.Epochs, o.Model.Dropout = 2, 0
	dir := t.TempDir()
	r := newRun(t, dir, o, &quiet{})
	r.Train, r.Val = synthetic(32, 1), synthetic(16, 2)
	hist, err := r.Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := []string{"best", "epoch", "images_per_sec", "lr", "seconds", "train_acc", "train_loss", "val_acc", "val_loss"}
	sc := bufio.NewScanner(f)
	lines := 0
	for ; sc.Scan(); lines++ {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("line %d: %v", lines+1, err)
		}
		keys := slices.Sorted(maps.Keys(line))
		if !slices.Equal(keys, want) {
			t.Fatalf("line %d has the keys %v, want %v", lines+1, keys, want)
		}
		if lines >= len(hist) {
			t.Fatalf("%d lines for %d epochs", lines+1, len(hist))
		}
		h := hist[lines]
		for k, v := range map[string]any{"epoch": float64(lines + 1), "lr": h.LR, "train_loss": h.TrainLoss, "train_acc": h.TrainAcc,
			"val_loss": h.ValLoss, "val_acc": h.ValAcc, "best": h.Best} {
			if line[k] != v {
				t.Errorf("line %d: %s is %v, want %v", lines+1, k, line[k], v)
			}
		}
	}
	if lines != 2 {
		t.Errorf("%d lines for 2 epochs", lines)
	}
}
