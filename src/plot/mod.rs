//! Pictures and plots, for the runner and the report alike: line plots and error-bar plots drawn with `plotters`
//! (PNG, and SVG beside it), image grids, heat maps and titled rows of panels written with `image`. Text uses an
//! embedded font ([`font`]), so nothing depends on the fonts of the machine. Imports nothing of the crate but
//! [`crate::files`].
pub mod axes;
pub mod bitmap;
pub mod canvas;
pub mod colormap;
pub mod density;
pub mod errorbars;
pub mod figure;
pub mod font;
pub mod legend;
pub mod lines;
pub mod panels;

pub use canvas::{read_png, save_png, Canvas};
pub use colormap::colormap;
pub use density::{grid_points, heatmap, scatter_density, Bounds};
pub use errorbars::{ErrorPanel, ErrorPlot, ErrorSeries};
pub use figure::Figure;
pub use lines::{LinePlot, Series};
pub use panels::{image_grid, image_grid_channels, titled_row};
