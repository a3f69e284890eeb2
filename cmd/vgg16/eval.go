package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // predict reads JPEG
	_ "image/png"  // and PNG
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vgg16/vgg16/internal/checkpoint"
	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/device"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/shell"
	"github.com/vgg16/vgg16/internal/tensor"
	"github.com/vgg16/vgg16/internal/train"
)

// loaded is a checkpoint's model on a backend, with what evaluation needs.
type loaded struct {
	model   *layers.Model
	classes []string
	eval    cifar.EvalTransform
	data    *train.DataOptions // what it was trained on, where the checkpoint says
	seed    uint64             // the run's --seed, which drew the held-out images of runs before DataOptions.FixedSplit
	batch   int                // the run's --batch, with which it validated
}

// trainedOn says whether evaluating on dataDir (split of a CIFAR-10
// directory) reads the images that data, a run's recorded data, trained
// on: the same batch file, the demo sample, or the same directory's
// training set.
func trainedOn(data *train.DataOptions, dataDir, split string) bool {
	if data == nil {
		return false
	}
	if dataDir == "demo" || data.Dir == "demo" {
		return dataDir == data.Dir
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil || !sameData(abs, data.Dir) { // the same path, another to it, or the folder of batches in it
		return false
	}
	return !isDir(dataDir) || split == "train"
}

// heldOutSet is the images the run that wrote ckpt (l) validated on, drawn
// again as train drew them from the data its checkpoint records, and where
// that data is: dataDir where given (--data names where it is now). Other
// images than the run's are said on errw.
func heldOutSet(ctx context.Context, errw io.Writer, l *loaded, ckpt, dataDir string, given bool) (*cifar.Dataset, string, error) {
	if l.data == nil {
		return nil, "", fmt.Errorf("--split val: %s records no training data (a state dict, or a checkpoint of a vgg16 before runs recorded theirs): evaluate it on --split test", ckpt)
	}
	df := *l.data
	if given {
		df.Dir = dataDir
	}
	if df.Dir != "demo" {
		st, err := os.Stat(df.Dir)
		if err != nil {
			return nil, "", fmt.Errorf("--split val: the run's data, %s: %w: give --data where it is now", df.Dir, err)
		}
		// (Part of CIFAR-10, or a folder that cannot be read: OpenData says which.)
		if folder, _ := cifar.Incomplete(df.Dir); st.IsDir() && !cifar.Exists(df.Dir) && folder == "" && cifar.Unreadable(df.Dir) == nil {
			return nil, "", fmt.Errorf("--split val: no CIFAR-10 in %s, where the run's data was: give --data where it is now (vgg16 data download --dir %s fetches CIFAR-10 again)", df.Dir, shell.Quote(df.Dir))
		}
	}
	_, ds, _, fromDir, err := train.OpenData(ctx, io.Discard, &df, l.seed, nil)
	if err != nil {
		return nil, "", err
	}
	if ds == nil || ds.Len() == 0 {
		return nil, "", fmt.Errorf("--split val: the run that wrote %s held out no images", ckpt)
	}
	// The images validated on: the test set's (--val-split 0 of a
	// directory), else drawn from the training images.
	other := l.data.Images != "" && df.Images != l.data.Images
	if fromDir && df.ValSplit == 0 {
		other = l.data.TestImages != "" && df.TestImages != l.data.TestImages
	}
	if other {
		fmt.Fprintf(errw, "note: %s holds other images than those the run drew its validation images from: this is not its val_acc\n", df.Dir)
	}
	return ds, df.Dir, nil
}

// trainedNote says how much of the set dataDir (n images) that a
// checkpoint trained on (trainedOn) it trained on: its --limit where that
// cut the part it did not hold out, else all but what it held out.
func trainedNote(ckpt, dataDir string, data *train.DataOptions, n int) string {
	switch {
	case data.Limit > 0 && float64(data.Limit) < float64(n)*(1-data.ValSplit):
		return fmt.Sprintf("note: %s trained on %d images of %s (--limit %d): this accuracy is partly on training images", ckpt, data.Limit, dataDir, data.Limit)
	case data.ValSplit > 0:
		return fmt.Sprintf("note: %s trained on %s but for the %g it held out: this accuracy is mostly on training images", ckpt, dataDir, data.ValSplit)
	}
	return fmt.Sprintf("note: %s trained on all of %s: this accuracy is on training images", ckpt, dataDir)
}

func loadModel(be tensor.Backend, path string) (*loaded, error) {
	ck, err := checkpoint.Load(path)
	if err != nil {
		return nil, err
	}
	if err := fitsBackend(be, ck.Info.Config); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m, err := layers.New(be, ck.Info.Config)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := m.LoadState(ck.State); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// The normalisation follows the training augmentation; weights from
	// elsewhere (torchvision's) expect ImageNet's.
	augment := "seed"
	o, err := train.ParseOptions(ck.Info.Flags)
	if err == nil && o.Augment != "" {
		augment = o.Augment
	}
	classes := ck.Info.Classes
	if len(classes) != ck.Info.Config.Classes {
		classes = make([]string, ck.Info.Config.Classes)
		for i := range classes {
			classes[i] = fmt.Sprint(i)
			if ck.Info.Config.Classes == len(cifar.ClassNames) {
				classes[i] = cifar.ClassNames[i]
			}
		}
	}
	return &loaded{model: m, classes: classes, eval: train.EvalTransformFor(augment, ck.Info.Config.ImageSize), data: o.Data, seed: o.Seed, batch: o.Batch}, nil
}

func evalCmd() *cobra.Command {
	var (
		dataDir, split string
		limitN, batch  int
		asJSON         bool
		dev            deviceFlags
	)
	cmd := &cobra.Command{
		Use:   "eval CHECKPOINT",
		Short: "Evaluate a checkpoint: accuracy, loss, per-class accuracy, confusion matrix",
		Example: `  vgg16 eval runs/20261126-181800-vgg16-224/best.safetensors
  vgg16 eval best.safetensors --data ./data --json > result.json
  vgg16 eval best.safetensors --data demo     # the embedded sample (seen in training!)
  vgg16 eval best.safetensors --split val     # the images the run validated on: its val_acc`,
		Args: exactArgs("CHECKPOINT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			switch {
			case batch < 1:
				return fmt.Errorf("--batch %d: need at least 1", batch)
			case limitN < 0:
				return fmt.Errorf("--limit %d: must not be negative (0 = all)", limitN)
			case split != "test" && split != "train" && split != "val":
				return fmt.Errorf("--split %q: want test, train or val", split)
			case isDir(args[0]) && checkpoint.Exists(filepath.Join(args[0], train.BestFile)):
				return fmt.Errorf("%s is a run directory: evaluate its checkpoint, %s", args[0], filepath.Join(args[0], train.BestFile))
			case dataDir != "demo" && train.MissingFile(dataDir):
				return fmt.Errorf("--data %s: no such file", dataDir)
			}
			be, line, err := device.Open(dev.options())
			if err != nil {
				return err
			}
			defer be.Close()
			l, err := loadModel(be, args[0])
			if err != nil {
				return err
			}
			var ds *cifar.Dataset
			if split == "val" {
				if ds, dataDir, err = heldOutSet(cmd.Context(), cmd.ErrOrStderr(), l, args[0], dataDir, cmd.Flags().Changed("data")); err != nil {
					return err
				}
				if !cmd.Flags().Changed("batch") && l.batch > 0 {
					batch = l.batch // as it validated: the same sums, the same loss to the bit
				}
			} else if st, serr := os.Stat(dataDir); serr == nil && st.Mode().IsRegular() {
				ds, err = cifar.ReadBatchFile(dataDir)
			} else if dataDir == "demo" {
				ds, err = cifar.Demo()
			} else {
				ds, err = cifar.Open(dataDir, split)
			}
			if err == nil && split != "val" && cmd.Flags().Changed("split") && (dataDir == "demo" || ds != nil && !isDir(dataDir)) {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: --split applies to a CIFAR-10 directory; %s is one set\n", dataDir)
			}
			if err != nil {
				return err
			}
			if n := l.model.Config.Classes; n != len(ds.Classes) {
				return fmt.Errorf("%s classifies %d classes, %s has %d: evaluate a model trained on them (vgg16 train --pretrained %s trains one from this one's features)", args[0], n, dataDir, len(ds.Classes), shell.Quote(args[0]))
			}
			if split != "val" && trainedOn(l.data, dataDir, split) {
				fmt.Fprintln(cmd.ErrOrStderr(), trainedNote(args[0], dataDir, l.data, ds.Len()))
			}
			if limitN > 0 && limitN < ds.Len() {
				ds = ds.Subset(train.Seq(limitN))
			}
			if _, onCPU := be.(*cpu.Backend); onCPU {
				if err := checkCPUEvalMemory(l.model.Config, max(1, min(batch, ds.Len()))); err != nil {
					return err
				}
			}
			var progress func(done, total int)
			if !asJSON {
				progress = evalProgress(cmd.ErrOrStderr())
			}
			res, err := train.Evaluate(l.model, ds, l.eval, batch, 0, progress)
			if err != nil {
				return err
			}
			if asJSON {
				scored := split // which images: a directory's split, else the one set given
				if split != "val" && (dataDir == "demo" || !isDir(dataDir)) {
					scored = ""
				}
				out := struct {
					Checkpoint string   `json:"checkpoint"`
					Data       string   `json:"data"`
					Split      string   `json:"split,omitempty"`
					Limit      int      `json:"limit,omitempty"`
					Classes    []string `json:"classes"`
					*train.EvalResult
				}{args[0], dataDir, scored, limitN, l.classes, res}
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			fmt.Fprintln(cmd.ErrOrStderr(), line)
			printEval(w, args[0], l.classes, res)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&dataDir, "data", "./data", "CIFAR-10 directory, one batch file (e.g. test_batch.bin), or \"demo\"")
	fs.StringVar(&split, "split", "test", "test, train, or val: the images the checkpoint's run held out and validated on (its recorded --data, --val-split and --limit), which reproduces its val_acc")
	fs.IntVar(&limitN, "limit", 0, "evaluate only the first N images")
	fs.IntVar(&batch, "batch", 100, "batch size")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	dev.register(fs)
	return cmd
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

func printEval(w io.Writer, path string, classes []string, r *train.EvalResult) {
	fmt.Fprintf(w, "%s on %d images: accuracy %.2f%%, loss %.4f\n\n", path, r.Images, 100*r.Acc, r.Loss)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "true \\ predicted\t")
	for _, c := range classes {
		fmt.Fprintf(tw, "%s\t", abbrev(c))
	}
	fmt.Fprintln(tw, "accuracy\t")
	for i, row := range r.Confusion {
		fmt.Fprintf(tw, "%s\t", classes[i])
		for _, v := range row {
			fmt.Fprintf(tw, "%d\t", v)
		}
		if !r.PerClass[i].Finite() {
			fmt.Fprintln(tw, "-\t")
		} else {
			fmt.Fprintf(tw, "%.1f%%\t\n", 100*r.PerClass[i])
		}
	}
	tw.Flush()
}

func abbrev(s string) string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}

func predictCmd() *cobra.Command {
	var (
		ckpt   string
		top    int
		asJSON bool
		dev    deviceFlags
	)
	cmd := &cobra.Command{
		Use:   "predict --checkpoint C IMAGE...",
		Short: "Classify PNG or JPEG images of any size",
		Long: `Classify images with a checkpoint. Each image is scaled to 32x32 first (the
size of CIFAR-10's images, which the model learnt from), then prepared exactly as
evaluation prepares CIFAR-10 images. An IMAGE of - is read from standard input.`,
		Example: `  vgg16 predict --checkpoint runs/x/best.safetensors cat.png dog.jpg
  vgg16 predict --checkpoint best.safetensors --top 3 --json photo.jpg
  curl -s https://example.com/cat.jpg | vgg16 predict --checkpoint best.safetensors -`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("no images: give one or more PNG or JPEG files to classify")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if ckpt == "" {
				return fmt.Errorf("--checkpoint is required: the .safetensors file to predict with")
			}
			if top < 1 {
				return fmt.Errorf("--top %d: need at least 1", top)
			}
			be, _, err := device.Open(dev.options())
			if err != nil {
				return err
			}
			defer be.Close()
			l, err := loadModel(be, ckpt)
			if err != nil {
				return err
			}
			preds := predict(l, args, top, cmd.InOrStdin())
			failed := 0
			for _, p := range preds {
				if p.Error != "" {
					failed++
				}
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(preds); err != nil {
					return err
				}
			} else {
				for _, p := range preds {
					if p.Error != "" {
						if len(preds) > 1 { // else it is the command's error
							fmt.Fprintf(cmd.ErrOrStderr(), "%s\n", p.Error)
						}
						continue
					}
					var parts []string
					for _, c := range p.Top {
						parts = append(parts, fmt.Sprintf("%s %.1f%%", c.Class, 100*c.Prob))
					}
					fmt.Fprintf(w, "%s: %s\n", p.Image, strings.Join(parts, ", "))
				}
			}
			switch {
			case failed == len(preds) && failed == 1:
				return errors.New(preds[0].Error)
			case failed == len(preds):
				return fmt.Errorf("none of the %d images has a prediction", failed)
			case failed > 0:
				return fmt.Errorf("%d of %d images have no prediction (the others are predicted)", failed, len(preds))
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&ckpt, "checkpoint", "", "checkpoint to predict with (.safetensors, or a PyTorch .pth state dict)")
	fs.IntVar(&top, "top", 3, "how many classes to show per image")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	dev.register(fs)
	return cmd
}

// Prediction is the top classes of one image, or why it could not be read.
type Prediction struct {
	Image string  `json:"image"`
	Top   []Score `json:"top,omitempty"`
	Error string  `json:"error,omitempty"`
}

// Score is one class's probability.
type Score struct {
	Class string  `json:"class"`
	Prob  float64 `json:"probability"`
}

// predict classifies each image of paths ("-" is stdin), a batch of them
// at a time; one that cannot be read gets its error instead, and the rest
// are still predicted.
func predict(l *loaded, paths []string, top int, stdin io.Reader) []Prediction {
	be := l.model.Backend()
	size := l.model.Config.ImageSize
	classes := l.model.Config.Classes
	per := 3 * size * size
	nb := max(1, min(len(paths), predictBatch(size)))
	x := tensor.NewActivation(be, nb, 3, size, size) // [nb, 3, size, size]
	defer be.Free(x)
	host := make([]float32, nb*per)       // [nb, 3, size, size]
	logits := make([]float32, nb*classes) // [nb, classes]
	out := make([]Prediction, len(paths))
	var batch []int // the indices of out whose images are in host, in order
	run := func() {
		n := len(batch)
		if n == 0 {
			return
		}
		xb := x.View(0, n, 3, size, size)
		be.Upload(xb, host[:n*per])
		be.Download(logits[:n*classes], l.model.Forward(xb, false))
		for j, i := range batch {
			lg := logits[j*classes : (j+1)*classes]
			if k := slices.IndexFunc(lg, func(v float32) bool { return !train.Number(v).Finite() }); k >= 0 {
				// Finite weights can still overflow: no class is more likely.
				out[i].Error = fmt.Sprintf("%s: the model's output for class %s is %v: no prediction", out[i].Image, l.classes[k], lg[k])
				continue
			}
			out[i].Top = topClasses(lg, l.classes, top)
		}
		batch = batch[:0]
	}
	for i, p := range paths {
		out[i].Image = p
		var img []byte
		var err error
		switch {
		case p != "-":
			img, err = readImage(p)
		case stdin == nil:
			err = errors.New("-: standard input is read once: give - once")
		default:
			img, err = decodeImage("-", stdin)
			stdin = nil
		}
		if err != nil {
			out[i].Error = err.Error()
			continue
		}
		l.eval.Apply(host[len(batch)*per:][:per], img, nil)
		if batch = append(batch, i); len(batch) == nb {
			run()
		}
	}
	run()
	return out
}

// predictBatch is how many images of size×size predict runs at once: 32
// at 32x32, fewer for larger images (10 at 224x224), whose outputs take
// ~25 MB an image in an evaluation.
func predictBatch(size int) int { return min(32, max(1, (1<<19)/(size*size))) }

// topClasses is the top classes of one image's logits, most probable first.
func topClasses(logits []float32, names []string, top int) []Score {
	probs := softmax(logits)
	idx := make([]int, len(probs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return probs[idx[a]] > probs[idx[b]] })
	var s []Score
	for _, i := range idx[:min(top, len(idx))] {
		s = append(s, Score{Class: names[i], Prob: probs[i]})
	}
	return s
}

func softmax(v []float32) []float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, float64(x))
	}
	p := make([]float64, len(v))
	var s float64
	for i, x := range v {
		p[i] = math.Exp(float64(x) - m)
		s += p[i]
	}
	for i := range p {
		p[i] /= s
	}
	return p
}

// maxImagePixels bounds the images predict decodes (100 megapixels: 400 MB
// decoded at 8 bits, 800 MB at 16, about twice that at the PNG decoder's
// peak): a larger one is refused by its header, before its pixels.
const maxImagePixels = 100_000_000

// readImage decodes a PNG or JPEG and scales it to CIFAR's 32x32, as
// 3×32×32 bytes: each output pixel averages the source pixels it covers.
// Transparency is dropped, the colours kept as they are (as PIL's
// convert("RGB") does), not darkened by the alpha.
func readImage(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, fmt.Errorf("%s is a directory: give image files", path)
	}
	return decodeImage(path, f)
}

// pixelReader returns img's colour at (x, y) in 16 bits a channel, as
// stored: an image with transparency keeps the colours of even its fully
// transparent pixels (as PIL's convert("RGB")), which the alpha-multiplied
// color.Color.RGBA would zero.
func pixelReader(img image.Image) func(x, y int) (r, g, b uint64) {
	if m, ok := img.(*image.NRGBA); ok { // PNGs with transparency, read without an allocation a pixel
		return func(x, y int) (uint64, uint64, uint64) {
			p := m.Pix[m.PixOffset(x, y):]
			return uint64(p[0]) * 0x101, uint64(p[1]) * 0x101, uint64(p[2]) * 0x101
		}
	}
	return func(x, y int) (uint64, uint64, uint64) {
		switch c := img.At(x, y).(type) {
		case color.NRGBA: // a paletted PNG's transparent entries
			return uint64(c.R) * 0x101, uint64(c.G) * 0x101, uint64(c.B) * 0x101
		case color.NRGBA64:
			return uint64(c.R), uint64(c.G), uint64(c.B)
		default:
			n := color.NRGBA64Model.Convert(c).(color.NRGBA64)
			return uint64(n.R), uint64(n.G), uint64(n.B)
		}
	}
}

// decodeImage is readImage's work on an open file or stream; name names it
// in errors.
func decodeImage(path string, f io.Reader) ([]byte, error) {
	// The header first: a few kilobytes can declare an image whose pixels
	// take gigabytes to decode. What it reads is kept and read again, not
	// sought back to, so that a pipe works too (/dev/stdin).
	var head bytes.Buffer
	hdr, _, err := image.DecodeConfig(io.TeeReader(f, &head))
	if err != nil && head.Len() == 0 {
		return nil, fmt.Errorf("%s: empty file, not an image", path)
	}
	if err == nil && int64(hdr.Width)*int64(hdr.Height) > maxImagePixels {
		return nil, fmt.Errorf("%s: %dx%d pixels, more than predict reads (%d megapixels): scale it down first", path, hdr.Width, hdr.Height, maxImagePixels/1000000)
	}
	img, format, err := image.Decode(io.MultiReader(&head, f))
	switch {
	case errors.Is(err, image.ErrFormat):
		return nil, fmt.Errorf("%s: not a PNG or JPEG image", path)
	case err != nil:
		return nil, fmt.Errorf("%s: a damaged or truncated image: %w", path, err)
	}
	b := img.Bounds()
	if b.Dx() == 0 || b.Dy() == 0 {
		return nil, fmt.Errorf("%s: empty %s image", path, format)
	}
	const side = cifar.Side
	// Cell o of an axis of n pixels covers [o·n/32, (o+1)·n/32), at least
	// one pixel: the cells part an axis of 32 or more, and repeat the
	// pixels of a shorter one. Each source row is summed into the 32 cells
	// across once (a pixel read once, however many cells share it), and
	// added to the cells down that hold it.
	span := func(o, n int) (int, int) { return o * n / side, max((o+1)*n/side, o*n/side+1) }
	px := pixelReader(img)
	var acc [side][side][4]uint64 // [cell row][cell column]: r, g, b, pixels
	var row [side][4]uint64
	for y := range b.Dy() {
		row = [side][4]uint64{}
		last, lr, lg, lb := -1, uint64(0), uint64(0), uint64(0)
		for ox := range side {
			x0, x1 := span(ox, b.Dx())
			for x := x0; x < x1; x++ {
				if x != last { // a short row's cells share their pixel
					lr, lg, lb = px(b.Min.X+x, b.Min.Y+y)
					last = x
				}
				row[ox][0] += lr
				row[ox][1] += lg
				row[ox][2] += lb
				row[ox][3]++
			}
		}
		for oy := max(0, y*side/b.Dy()-2); oy < side; oy++ { // from before the first cell down that holds y
			y0, y1 := span(oy, b.Dy())
			if y >= y1 {
				continue
			}
			if y < y0 {
				break
			}
			for ox := range side {
				for k := range 4 {
					acc[oy][ox][k] += row[ox][k]
				}
			}
		}
	}
	out := make([]byte, 3*side*side)
	for oy := range side {
		for ox := range side {
			c, p := acc[oy][ox], oy*side+ox
			out[p] = byte(c[0] / c[3] >> 8)
			out[side*side+p] = byte(c[1] / c[3] >> 8)
			out[2*side*side+p] = byte(c[2] / c[3] >> 8)
		}
	}
	return out, nil
}
