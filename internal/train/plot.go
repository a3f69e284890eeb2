package train

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

var (
	colTrain = color.RGBA{31, 119, 180, 255} // blue
	colVal   = color.RGBA{255, 127, 14, 255} // orange
	colAxis  = color.RGBA{60, 60, 60, 255}
	colGrid  = color.RGBA{225, 225, 225, 255}
)

// Plot draws the loss and accuracy curves of a run as a PNG: two panels,
// train in blue and validation in orange, against the epoch.
func Plot(h []EpochMetrics) ([]byte, error) {
	const w, ht = 960, 400
	img := image.NewRGBA(image.Rect(0, 0, w, ht))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	pick := func(f func(EpochMetrics) float64) []float64 {
		v := make([]float64, len(h))
		for i, m := range h {
			v[i] = f(m)
		}
		return v
	}
	panel(img, image.Rect(0, 0, w/2, ht), "loss", pick(func(m EpochMetrics) float64 { return m.TrainLoss }), pick(func(m EpochMetrics) float64 { return m.ValLoss }), false)
	panel(img, image.Rect(w/2, 0, w, ht), "accuracy %", pick(func(m EpochMetrics) float64 { return 100 * m.TrainAcc }), pick(func(m EpochMetrics) float64 { return 100 * m.ValAcc }), true)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func panel(img *image.RGBA, r image.Rectangle, title string, train, val []float64, fromZero bool) {
	plot := image.Rect(r.Min.X+60, r.Min.Y+30, r.Max.X-20, r.Max.Y-40)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range append(append([]float64(nil), train...), val...) {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0, 1
	}
	if fromZero {
		lo = 0
	}
	if hi-lo < 1e-9 {
		hi = lo + 1
	}
	n := max(len(train), 2)
	px := func(i int) int { return plot.Min.X + i*(plot.Dx()-1)/(n-1) }
	if len(train) == 1 { // one epoch: its point in the middle, not on the axis
		px = func(int) int { return plot.Min.X + plot.Dx()/2 }
	}
	py := func(v float64) int { return plot.Max.Y - int((v-lo)/(hi-lo)*float64(plot.Dy()-1)) }
	for k, label := range tickLabels(lo, hi) { // horizontal grid with labels
		y := py(lo + (hi-lo)*float64(k)/4)
		hline(img, plot.Min.X, plot.Max.X, y, colGrid)
		text(img, r.Min.X+4, y+4, label, colAxis)
	}
	hline(img, plot.Min.X, plot.Max.X, plot.Max.Y, colAxis)
	vline(img, plot.Min.X, plot.Min.Y, plot.Max.Y, colAxis)
	if len(train) == 1 {
		text(img, px(0), plot.Max.Y+16, "1", colAxis)
	} else {
		text(img, plot.Min.X, plot.Max.Y+16, "1", colAxis)
		text(img, plot.Max.X-30, plot.Max.Y+16, fmt.Sprint(len(train)), colAxis)
	}
	text(img, plot.Min.X+plot.Dx()/2-20, plot.Max.Y+30, "epoch", colAxis)
	text(img, plot.Min.X, r.Min.Y+18, title, colAxis)
	text(img, plot.Max.X-110, r.Min.Y+18, "train", colTrain)
	text(img, plot.Max.X-60, r.Min.Y+18, "val", colVal)
	curve(img, train, px, py, colTrain)
	curve(img, val, px, py, colVal)
}

// tickLabels are the labels of the five grid lines from lo to hi, with
// the decimals of the step between them, or one more where it has more (a
// loss from 2.30 to 2.32 needs three), so that no two read the same.
func tickLabels(lo, hi float64) []string {
	step := (hi - lo) / 4
	decimals := max(int(math.Ceil(-math.Log10(step))), 0)
	if s := step * math.Pow10(decimals); math.Abs(s-math.Round(s)) > 1e-6*s {
		decimals++ // 0.25 needs two
	}
	decimals = min(decimals, 5) // within the margin
	labels := make([]string, 5)
	for k := range labels {
		labels[k] = fmt.Sprintf("%7.*f", decimals, lo+step*float64(k))
	}
	return labels
}

func curve(img *image.RGBA, v []float64, px func(int) int, py func(float64) int, c color.Color) {
	prev := -1
	for i, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			prev = -1
			continue
		}
		dot(img, px(i), py(x), c)
		if prev >= 0 {
			line(img, px(prev), py(v[prev]), px(i), py(x), c)
		}
		prev = i
	}
}

func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	steps := max(abs(x1-x0), abs(y1-y0), 1)
	for s := 0; s <= steps; s++ {
		x := x0 + (x1-x0)*s/steps
		y := y0 + (y1-y0)*s/steps
		img.Set(x, y, c)
		img.Set(x, y+1, c)
	}
}

func dot(img *image.RGBA, x, y int, c color.Color) {
	for dy := -2; dy <= 2; dy++ {
		for dx := -2; dx <= 2; dx++ {
			img.Set(x+dx, y+dy, c)
		}
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		img.Set(x, y, c)
	}
}

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
