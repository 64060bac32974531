import Foundation

/// A loss curve as a self-contained SVG (train and validation), readable in any browser.
public enum LossCurve {
    public static func svg(train: [(step: Int, loss: Double)], valid: [(step: Int, loss: Double)], title: String) -> String {
        let width = 720.0, height = 420.0, left = 64.0, right = 20.0, top = 36.0, bottom = 52.0
        let all = (train + valid).filter { $0.loss.isFinite }
        let maxStep = Double(max(all.map(\.step).max() ?? 1, 1))
        var low = all.map(\.loss).min() ?? 0, high = all.map(\.loss).max() ?? 1
        if high - low < 1e-9 { low -= 0.5; high += 0.5 }
        func x(_ step: Int) -> Double { left + (width - left - right) * Double(step) / maxStep }
        func y(_ loss: Double) -> Double { top + (height - top - bottom) * (high - loss) / (high - low) }
        func path(_ points: [(step: Int, loss: Double)]) -> String {
            points.filter { $0.loss.isFinite }.enumerated().map { i, p in
                String(format: "%@%.1f,%.1f", i == 0 ? "M" : " L", x(p.step), y(p.loss))
            }.joined()
        }
        func escape(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        }
        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(left)" y="22" font-size="14">\(escape(title))</text>

        """
        for i in 0...4 {
            let v = low + (high - low) * Double(i) / 4
            out += String(format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", left, width - right, y(v), y(v))
            out += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3f</text>\n", left - 6, y(v) + 4, v)
        }
        // Step ticks at round numbers (1, 2 or 5 × 10^k apart, about 6 of them).
        let rough = maxStep / 6
        let magnitude = Foundation.pow(10, (Foundation.log10(max(rough, 1))).rounded(.down))
        let spacing = max(1, [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? magnitude * 10)
        var tick = 0.0
        while tick <= maxStep + 1e-9 {
            let px = x(Int(tick))
            out += String(format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#999\"/>", px, px, height - bottom, height - bottom + 5)
            out += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d</text>\n", px, height - bottom + 18, Int(tick))
            tick += spacing
        }
        out += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">optimizer step</text>\n", (left + width - right) / 2, height - 8)
        out += "<path d=\"\(path(train))\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\"/>\n"
        if !valid.isEmpty {
            out += "<path d=\"\(path(valid))\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\"/>\n"
            for p in valid where p.loss.isFinite { out += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>", x(p.step), y(p.loss)) }
        }
        out += "\n<text x=\"\(width - right - 150)\" y=\"\(top + 4)\" fill=\"#1f77b4\">— train loss</text>\n"
        if !valid.isEmpty {
            out += "<text x=\"\(width - right - 150)\" y=\"\(top + 20)\" fill=\"#d62728\">— validation loss</text>\n"
        }
        out += "</svg>\n"
        return out
    }
}
