#include <string>

class Counter {
public:
	explicit Counter(int step) : step_(step) {}
	int advance();
	std::string label() const;
private:
	int step_;
	int value_ = 0;
};
