package train

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/vgg16/vgg16/internal/robust"
)

// Number is a float64 that JSON writes as null where it is NaN or ±Inf,
// which JSON lacks (a class without images, a run without validation, a
// loss that overflowed), and reads back from null as NaN.
type Number float64

// Finite reports whether n is neither NaN nor ±Inf.
func (n Number) Finite() bool { return !math.IsNaN(float64(n)) && !math.IsInf(float64(n), 0) }

func (n Number) MarshalJSON() ([]byte, error) {
	if !n.Finite() {
		return []byte("null"), nil
	}
	return json.Marshal(float64(n))
}

func (n *Number) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = Number(math.NaN())
		return nil
	}
	return json.Unmarshal(b, (*float64)(n))
}

// jsonMetrics is EpochMetrics with its validation figures as Numbers.
type jsonMetrics struct {
	EpochMetrics
	ValLoss Number `json:"val_loss"`
	ValAcc  Number `json:"val_acc"`
}

// writeMetrics rewrites metrics.jsonl with the whole history (so a resumed
// run's file has no duplicate epochs) and redraws the plot, both atomically.
func (r *Run) writeMetrics() error {
	var b strings.Builder
	for _, h := range r.history {
		line, err := json.Marshal(jsonMetrics{EpochMetrics: h, ValLoss: Number(h.ValLoss), ValAcc: Number(h.ValAcc)})
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
		j := jsonMetrics{ValLoss: Number(math.NaN()), ValAcc: Number(math.NaN())} // a line without them had no validation
		if err := json.Unmarshal(sc.Bytes(), &j); err != nil {
			return out, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		em := j.EpochMetrics
		em.ValLoss, em.ValAcc = float64(j.ValLoss), float64(j.ValAcc)
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
	return robust.Rename(tmp.Name(), path)
}
