// treelora/io/svg.hpp: small self-contained SVG plots for reports: line charts, heat maps, trees.
// Each function writes one complete <svg> document; nothing to install, any browser shows it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "treelora/core/error.hpp"
#include "treelora/tree/tree_node.hpp"

namespace treelora::svg {

inline constexpr const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                          "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};

/// Escapes &, <, > and quotes for SVG text.
inline std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

inline std::string number(double v, int precision = 3) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.*g", precision, v);
  return buffer;
}

struct series {
  std::string name;
  std::vector<double> x, y;
};

struct axes {
  std::string title, x_label, y_label;
  bool log_x = false, log_y = false;
  double width = 720, height = 420;
};

/// Lines through (x, y) with a legend on the right; NaN points are skipped.
inline void line_chart(std::ostream& out, std::span<const series> lines, const axes& a) {
  const double left = 70, right = 190, top = 40, bottom = 50;
  const auto tx = [&](double v) { return a.log_x ? std::log10(v) : v; };
  const auto ty = [&](double v) { return a.log_y ? std::log10(v) : v; };
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : lines) {
    if (s.x.size() != s.y.size())
      throw_invalid_argument("svg::line_chart", concat("series '", s.name, "' has ", s.x.size(), " x and ", s.y.size(), " y"));
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, tx(s.x[i])), x1 = std::max(x1, tx(s.x[i]));
      y0 = std::min(y0, ty(s.y[i])), y1 = std::max(y1, ty(s.y[i]));
    }
  }
  if (!(x1 >= x0)) x0 = 0, x1 = 1;
  if (!(y1 >= y0)) y0 = 0, y1 = 1;
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  const auto px = [&](double v) { return left + (a.width - left - right) * (tx(v) - x0) / (x1 - x0); };
  const auto py = [&](double v) { return a.height - bottom - (a.height - top - bottom) * (ty(v) - y0) / (y1 - y0); };
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << a.width << "\" height=\"" << a.height
      << "\" font-family=\"Helvetica\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << left << "\" y=\"24\" font-size=\"15\">" << escape(a.title) << "</text>\n";
  const double bx = left, by = a.height - bottom, ex = a.width - right, ey = top;
  out << "<polyline fill=\"none\" stroke=\"black\" points=\"" << bx << ',' << ey << ' ' << bx << ',' << by << ' ' << ex << ','
      << by << "\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double fx = x0 + (x1 - x0) * i / 4, fy = y0 + (y1 - y0) * i / 4;
    const double vx = a.log_x ? std::pow(10, fx) : fx, vy = a.log_y ? std::pow(10, fy) : fy;
    out << "<text x=\"" << px(vx) << "\" y=\"" << by + 18 << "\" text-anchor=\"middle\">" << number(vx) << "</text>\n"
        << "<text x=\"" << bx - 6 << "\" y=\"" << py(vy) + 4 << "\" text-anchor=\"end\">" << number(vy) << "</text>\n"
        << "<line x1=\"" << bx << "\" x2=\"" << ex << "\" y1=\"" << py(vy) << "\" y2=\"" << py(vy)
        << "\" stroke=\"#eeeeee\"/>\n";
  }
  out << "<text x=\"" << (bx + ex) / 2 << "\" y=\"" << a.height - 12 << "\" text-anchor=\"middle\">" << escape(a.x_label)
      << "</text>\n<text x=\"16\" y=\"" << (by + ey) / 2 << "\" transform=\"rotate(-90 16 " << (by + ey) / 2
      << ")\" text-anchor=\"middle\">" << escape(a.y_label) << "</text>\n";
  for (std::size_t s = 0; s < lines.size(); ++s) {
    const char* colour = palette[s % std::size(palette)];
    out << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.8\" points=\"";
    const std::size_t n = lines[s].x.size(), stride = std::max<std::size_t>(1, n / 400);
    for (std::size_t i = 0; i < n; i += stride)
      if (std::isfinite(lines[s].y[i])) out << px(lines[s].x[i]) << ',' << py(lines[s].y[i]) << ' ';
    if (n && (n - 1) % stride != 0 && std::isfinite(lines[s].y[n - 1])) out << px(lines[s].x[n - 1]) << ',' << py(lines[s].y[n - 1]);
    out << "\"/>\n";
    if (n <= 20)
      for (std::size_t i = 0; i < n; ++i)
        if (std::isfinite(lines[s].y[i]))
          out << "<circle cx=\"" << px(lines[s].x[i]) << "\" cy=\"" << py(lines[s].y[i]) << "\" r=\"3\" fill=\"" << colour << "\"/>\n";
    out << "<text x=\"" << ex + 10 << "\" y=\"" << top + 18 * static_cast<double>(s) + 10 << "\" fill=\"" << colour << "\">"
        << escape(lines[s].name) << "</text>\n";
  }
  out << "</svg>\n";
}

/// A rows x cols matrix as coloured cells (white 0 to blue 1) with the values printed; NaN cells are grey.
inline void heat_map(std::ostream& out, std::span<const double> values, std::size_t rows, std::size_t cols,
                     const std::string& title, const std::string& row_label, const std::string& col_label,
                     double scale = 100.0) {
  if (values.size() != rows * cols)
    throw_invalid_argument("svg::heat_map", concat(values.size(), " values for ", rows, " x ", cols));
  const double cell = 48, left = 70, top = 50;
  const double width = std::max(left + cell * double(cols) + 20, 20 + 7.2 * double(title.size()));
  const double height = top + cell * double(rows) + 40;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"Helvetica\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"10\" y=\"22\" font-size=\"14\">" << escape(title) << "</text>\n";
  for (std::size_t j = 0; j < cols; ++j)
    out << "<text x=\"" << left + cell * (double(j) + 0.5) << "\" y=\"" << top - 6 << "\" text-anchor=\"middle\">"
        << escape(col_label) << j << "</text>\n";
  for (std::size_t i = 0; i < rows; ++i) {
    out << "<text x=\"" << left - 6 << "\" y=\"" << top + cell * (double(i) + 0.5) + 4 << "\" text-anchor=\"end\">"
        << escape(row_label) << i << "</text>\n";
    for (std::size_t j = 0; j < cols; ++j) {
      const double v = values[i * cols + j];
      std::string fill = "#dddddd";
      if (std::isfinite(v)) {
        const double t = std::clamp(v, 0.0, 1.0);
        char colour[16];
        std::snprintf(colour, sizeof colour, "#%02x%02x%02x", int(255 - 225 * t), int(255 - 150 * t), 255);
        fill = colour;
      }
      out << "<rect x=\"" << left + cell * double(j) << "\" y=\"" << top + cell * double(i) << "\" width=\"" << cell
          << "\" height=\"" << cell << "\" fill=\"" << fill << "\" stroke=\"white\"/>\n";
      if (std::isfinite(v))
        out << "<text x=\"" << left + cell * (double(j) + 0.5) << "\" y=\"" << top + cell * (double(i) + 0.5) + 4
            << "\" text-anchor=\"middle\" fill=\"" << (v > 0.6 ? "white" : "black") << "\">" << number(scale * v, 3)
            << "</text>\n";
    }
  }
  out << "</svg>\n";
}

/// A binary tree of tree_node (nodes[0] = root), leaves labelled with their task lists, internal nodes with the
/// module they split on and their threshold.
inline void tree_diagram(std::ostream& out, std::span<const tree_node> nodes, const std::string& title) {
  if (nodes.empty()) throw_invalid_argument("svg::tree_diagram", "the tree has no nodes");
  // In-order leaf positions give x; depth gives y.
  std::vector<double> x(nodes.size(), 0);
  double next_leaf = 0;
  int max_depth = 0;
  auto place = [&](auto&& self, index_t i) -> void {
    const auto& n = nodes[std::size_t(i)];
    max_depth = std::max(max_depth, int(n.depth));
    if (n.leaf) {
      x[std::size_t(i)] = next_leaf++;
      return;
    }
    self(self, n.left);
    self(self, n.right);
    x[std::size_t(i)] = (x[std::size_t(n.left)] + x[std::size_t(n.right)]) / 2;
  };
  place(place, 0);
  const double dx = 110, dy = 80, margin = 60;
  const double width = std::max(300.0, margin * 2 + dx * std::max(0.0, next_leaf - 1)), height = margin * 2 + dy * max_depth + 20;
  const auto px = [&](std::size_t i) { return margin + dx * x[i]; };
  const auto py = [&](std::size_t i) { return margin + 10 + dy * double(nodes[i].depth); };
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"Helvetica\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"10\" y=\"22\" font-size=\"14\">" << escape(title) << "</text>\n";
  std::vector<index_t> stack = {0};
  while (!stack.empty()) {
    const auto i = std::size_t(stack.back());
    stack.pop_back();
    const auto& n = nodes[i];
    if (!n.leaf)
      for (index_t c : {n.left, n.right}) {
        out << "<line x1=\"" << px(i) << "\" y1=\"" << py(i) << "\" x2=\"" << px(std::size_t(c)) << "\" y2=\""
            << py(std::size_t(c)) << "\" stroke=\"#888\"/>\n";
        stack.push_back(c);
      }
    std::string label;
    for (std::size_t k = 0; k < n.tasks.size(); ++k) label += (k ? "," : "") + std::to_string(n.tasks[k]);
    const char* fill = n.leaf ? "#c6dbef" : "#fdd0a2";
    out << "<circle cx=\"" << px(i) << "\" cy=\"" << py(i) << "\" r=\"16\" fill=\"" << fill << "\" stroke=\"#555\"/>\n"
        << "<text x=\"" << px(i) << "\" y=\"" << py(i) + 30 << "\" text-anchor=\"middle\">T" << escape(label) << "</text>\n";
    if (!n.leaf)
      out << "<text x=\"" << px(i) << "\" y=\"" << py(i) + 4 << "\" text-anchor=\"middle\" font-size=\"10\">m"
          << n.module << "</text>\n";
  }
  out << "</svg>\n";
}

}  // namespace treelora::svg
