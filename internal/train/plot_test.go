package train

import (
	"bytes"
	"image/color"
	"image/png"
	"slices"
	"strings"
	"testing"
)

// TestTickLabels: the five labels of a panel's grid differ however narrow
// the range, and carry no more decimals than that needs.
func TestTickLabels(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		want   []string
	}{
		{2.30, 2.32, []string{"2.300", "2.305", "2.310", "2.315", "2.320"}},
		{2.3012, 2.3139, []string{"2.3012", "2.3044", "2.3075", "2.3107", "2.3139"}},
		{0, 1, []string{"0.00", "0.25", "0.50", "0.75", "1.00"}},
		{0.5, 2.5, []string{"0.5", "1.0", "1.5", "2.0", "2.5"}},
		{0, 4000, []string{"0", "1000", "2000", "3000", "4000"}},
	} {
		got := tickLabels(c.lo, c.hi)
		for i := range got {
			got[i] = strings.TrimSpace(got[i])
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("tickLabels(%g, %g) = %q, want %q", c.lo, c.hi, got, c.want)
		}
	}
}

// TestPlotOneEpoch: one epoch's point stands in the middle of each panel,
// not on its left axis, where the first of several epochs stands. (The
// legend's "train" is drawn in the same colour, above the plot area.)
func TestPlotOneEpoch(t *testing.T) {
	for _, c := range []struct {
		epochs int
		at     int // the x of the first training point in the loss panel
	}{{1, 60 + (480-80)/2}, {3, 60}} {
		h := make([]EpochMetrics, c.epochs)
		for i := range h {
			h[i] = EpochMetrics{Epoch: i + 1, TrainLoss: 2 - 0.1*float64(i), ValLoss: 1.9, TrainAcc: 0.3, ValAcc: 0.35}
		}
		b, err := Plot(h)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		first := -1
		for x := 0; x < 480 && first < 0; x++ {
			for y := 30; y < 360; y++ { // the plot area, below the legend
				if img.At(x, y) == color.Color(colTrain) {
					first = x
					break
				}
			}
		}
		if first < c.at-2 || first > c.at+2 {
			t.Errorf("%d epochs: the first training point at x %d, want %d", c.epochs, first, c.at)
		}
	}
}
