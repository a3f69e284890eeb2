package train

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// jsonFloat writes NaN (no validation set) as null.
type jsonMetrics struct {
	EpochMetrics
	ValLoss *float64 `json:"val_loss"`
	ValAcc  *float64 `json:"val_acc"`
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// writeMetrics rewrites metrics.jsonl with the whole history (so a resumed
// run's file has no duplicate epochs) and redraws the plot, both atomically.
func (r *Run) writeMetrics(em EpochMetrics) error {
	var b strings.Builder
	for _, h := range r.history {
		line, err := json.Marshal(jsonMetrics{EpochMetrics: h, ValLoss: finite(h.ValLoss), ValAcc: finite(h.ValAcc)})
		if err != nil {
			return err
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := writeAtomic(filepath.Join(r.Dir, MetricsFile), []byte(b.String())); err != nil {
		return err
	}
	png, err := Plot(r.history)
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(r.Dir, PlotFile), png)
}

// ReadMetrics reads a metrics.jsonl file.
func ReadMetrics(path string) ([]EpochMetrics, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []EpochMetrics
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		var j jsonMetrics
		if err := json.Unmarshal(sc.Bytes(), &j); err != nil {
			return out, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		em := j.EpochMetrics
		em.ValLoss, em.ValAcc = math.NaN(), math.NaN()
		if j.ValLoss != nil {
			em.ValLoss = *j.ValLoss
		}
		if j.ValAcc != nil {
			em.ValAcc = *j.ValAcc
		}
		out = append(out, em)
	}
	return out, sc.Err()
}

// writeAtomic writes data to path through a synced temporary file.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o644); err != nil { // CreateTemp's 0600: metrics are ordinary data, as the checkpoints
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
